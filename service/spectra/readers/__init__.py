"""Reader modules, imported by name so that each registers itself exactly once."""

from . import (  # noqa: F401
    arrays,
    desi_coadd,
    eso_sdp,
    exposure,
    sdss_spec,
    sdss_spplate,
    sdss_spspec,
    specutils_tabular,
)
