"""Lightcone reader modules, imported by name so that each registers itself exactly once."""

from . import fits_cube, hdf5, npy  # noqa: F401
