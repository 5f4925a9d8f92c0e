"""Reader modules, imported by name so that each registers itself exactly once."""

from . import arrays, desi_coadd, eso_sdp, exposure, sdss_spec, sdss_spspec  # noqa: F401
