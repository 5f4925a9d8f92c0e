"""One router per resource: health, models (OIP), spectra (native), repository (admin),
metrics."""
