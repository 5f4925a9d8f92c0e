"""What both trainers (spectra, lightcone) share: the strict config builder, the manifest
writer, float32 tolerances, the run log and the saliency-export helpers."""
