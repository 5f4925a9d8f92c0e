"""sdss-spplate: a plate of eight fibres built around the real SDSS star (tests/support/
multi_object_files.py) — one spectrum per fibre under its PLATE-MJD-FIBER id, the real fibre
equal to the real spec file, the spec file's mask rule, sky fibres returned flagged, a dead
fibre returned and refused in its place, malformed plates refused with typed 4xx codes, and
`specula classify` giving one row per fibre.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from astropy.io import fits

from service.io import InputError
from service.spectra import Source, list_readers, preprocess, read_spectra
from service.spectra.readers.sdss_spplate import SKY_WARNING
from tests.support.multi_object_files import (
    BRIGHTSKY,
    BRIGHTSKY_FIBRE,
    DEAD_FIBRE,
    FIBRES,
    REAL_FIBRE,
    SKY_FIBRE,
    Fibre,
    plate_header,
    real_plate,
    write_spplate,
)

IDS = [f"1198-52669-{f:04d}" for f in FIBRES]
GENERIC = "sdss-spplate: "  # the registry's catch-all detail: must never be needed


@pytest.fixture(scope="module")
def plate(sdss_spec_path) -> bytes:
    return real_plate(sdss_spec_path)


@pytest.fixture(scope="module")
def fibres(plate):
    name, spectra = read_spectra(Source(plate, name="spPlate-1198-52669.fits"))
    assert name == "sdss-spplate"
    return spectra


@pytest.fixture(scope="module")
def real(sdss_spec_path):
    return read_spectra(Source.from_path(sdss_spec_path))[1][0]


def by_fibre(spectra, fibre: int):
    return next(s for s in spectra if s.meta["fibre"] == fibre)


def test_every_fibre_is_one_spectrum_under_its_id(fibres):
    assert [s.object_id for s in fibres] == IDS
    for s, f in zip(fibres, FIBRES):
        assert s.meta["survey"] == "sdss" and s.meta["format"] == "sdss-spplate"
        assert (s.meta["plate"], s.meta["mjd"], s.meta["fibre"]) == (1198, 52669, f)
        assert isinstance(s.meta["ra"], float) and isinstance(s.meta["dec"], float)
    assert fibres[0].wavelength is fibres[-1].wavelength  # one grid for the plate


def test_the_real_fibre_is_the_real_spectrum(fibres, real):
    """Fibre 63 holds the spec file's pixels from pixel 6 of the plate grid (COEFF0 3.5791 vs
    the spec file's first loglam 3.5797): same wavelengths (to the float32 loglam the spec
    file stores), flux, ivar and mask, and the same model input."""
    s = by_fibre(fibres, REAL_FIBRE)
    assert s.object_id == real.object_id == "1198-52669-0063"
    sl = slice(6, 6 + real.npix)
    np.testing.assert_allclose(s.wavelength[sl], real.wavelength, rtol=5e-7)
    np.testing.assert_array_equal(s.flux[sl], real.flux)
    np.testing.assert_array_equal(s.ivar[sl], real.ivar)
    np.testing.assert_array_equal(s.mask[sl], real.mask)
    assert s.mask[:6].all() and s.mask[sl.stop:].all()  # NODATA beyond the fibre's range
    a, b = preprocess(real), preprocess(s)
    np.testing.assert_allclose(b.x, a.x, atol=1e-3)
    assert b.masked_fraction == pytest.approx(a.masked_fraction)


def test_mask_is_the_spec_file_rule(plate, fibres):
    """mask = (and-mask != 0) | (ivar == 0), pixel for pixel, on every fibre: BRIGHTSKY pixels
    with ivar > 0 (fibre 66) are masked, as an SDSS spec file's would be."""
    with fits.open(io.BytesIO(plate)) as h:
        ivar, and_mask = h[1].data.astype(np.float64), h[2].data
    for i, s in enumerate(fibres):
        np.testing.assert_array_equal(s.mask, (and_mask[i] != 0) | (ivar[i] <= 0))
    bright = (and_mask[FIBRES.index(BRIGHTSKY_FIBRE)] & BRIGHTSKY) != 0
    assert bright.sum() > 20
    assert (ivar[FIBRES.index(BRIGHTSKY_FIBRE)][bright] > 0).all()
    assert by_fibre(fibres, BRIGHTSKY_FIBRE).mask[bright].all()


def test_sky_fibre_is_returned_flagged_and_nothing_is_dropped(fibres):
    sky = by_fibre(fibres, SKY_FIBRE)
    assert sky.meta["objtype"] == "SKY" and sky.meta["warnings"] == [SKY_WARNING]
    assert all("warnings" not in s.meta for s in fibres if s is not sky)
    assert len(fibres) == len(FIBRES)


def test_dead_fibre_is_returned_and_refused_in_its_place(fibres):
    dead = by_fibre(fibres, DEAD_FIBRE)
    assert dead.object_id == "1198-52669-0065" and dead.mask.all()
    with pytest.raises(InputError) as e:
        preprocess(dead)
    assert e.value.code == "empty_spectrum"


@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning",
                            "ignore::astropy.units.UnitsWarning")
def test_an_independent_reader_agrees(plate, fibres):
    """specutils' own spPlate loader reads the written file to the same pixels and grid.

    Its grid is ours one pixel on: its WAVE-LOG WCS keeps CRPIX = 0, so pixel 0 lands at
    10^(COEFF0 + COEFF1) (the printout in astropy/astropy#11215 shows the same), whereas
    COEFF0 is "Central wavelength (log10) of first pixel" in idlspec2d's own header."""
    specutils = pytest.importorskip("specutils")
    su = specutils.Spectrum.read(io.BytesIO(plate), format="SDSS spPlate")
    np.testing.assert_allclose(su.spectral_axis.to_value("Angstrom")[:-1],
                               fibres[0].wavelength[1:], rtol=1e-9)
    assert fibres[0].wavelength[0] == pytest.approx(10 ** 3.5791, rel=1e-12)
    for i, s in enumerate(fibres):
        good = ~s.mask
        np.testing.assert_allclose(s.flux[good], su.flux.value[i][good], rtol=1e-6)
        np.testing.assert_allclose(s.ivar[good], su.uncertainty.array[i][good], rtol=1e-6)
        assert (s.mask | ~su.mask[i]).all()  # every pixel specutils masks, we mask


def test_identified_over_spspec_by_priority(plate):
    src = Source(plate)
    matches = [r for r in list_readers() if r.identify(src)]
    assert [r.name for r in matches] == ["sdss-spplate", "sdss-spspec"]
    assert matches[0].priority > matches[1].priority


def test_full_plates_of_640_and_1000_fibres(sdss_spec_path):
    """Real plate sizes: every fibre back, ids FIBERID-numbered, order kept."""
    with fits.open(sdss_spec_path) as h:
        header = plate_header(h[0].header)
    npix = 400
    for nfiber, plate_id in ((640, 1198), (1000, 4000)):
        header["PLATEID"] = plate_id
        rng = np.random.default_rng(nfiber)
        rows = [Fibre(i + 1, "SKY" if i % 20 == 0 else "GALAXY", rng.normal(5, 1, npix),
                      np.full(npix, 4.0), np.zeros(npix, np.int32), 10.0, 20.0)
                for i in range(nfiber)]
        _, spectra = read_spectra(Source(write_spplate(header, rows)))
        assert [s.object_id for s in spectra] == [f"{plate_id:04d}-52669-{i + 1:04d}"
                                                  for i in range(nfiber)]
        assert sum("warnings" in s.meta for s in spectra) == nfiber // 20


# ---- malformed plates: typed 4xx codes, never the catch-all --------------------------------
def _rewrite(plate: bytes, edit) -> bytes:
    with fits.open(io.BytesIO(plate)) as h:
        hdus = [hdu.copy() for hdu in h]
    hdus = edit(hdus) or hdus
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf, output_verify="silentfix")
    return buf.getvalue()


def _ivar_short(h):
    h[1] = fits.ImageHDU(h[1].data[:, :-10], name="IVAR")


def _plugmap_short(h):
    h[5] = fits.BinTableHDU(h[5].data[:-1], name="PLUGMAP")


def _no_plugmap(h):
    return h[:5]


def _float_andmask(h):
    h[2] = fits.ImageHDU(h[2].data.astype(np.float32), name="ANDMASK")


def _andmask_short(h):
    h[2] = fits.ImageHDU(h[2].data[:-2], name="ANDMASK")


def _text_fiberid(h):
    cols = [c if c.name != "FIBERID" else fits.Column("FIBERID", "4A",
                                                      array=np.array(["x"] * len(h[5].data)))
            for c in h[5].columns]
    h[5] = fits.BinTableHDU.from_columns(cols, name="PLUGMAP")


def _numeric_objtype(h):
    cols = [c if c.name != "OBJTYPE" else fits.Column("OBJTYPE", "J",
                                                      array=np.zeros(len(h[5].data)))
            for c in h[5].columns]
    h[5] = fits.BinTableHDU.from_columns(cols, name="PLUGMAP")


def _coeff1_zero(h):
    h[0].header["COEFF1"] = 0.0


def _coeff0_text(h):
    h[0].header["COEFF0"] = "abc"


@pytest.mark.parametrize("edit,code", [
    (_ivar_short, "bad_shape"), (_plugmap_short, "bad_shape"), (_no_plugmap, "missing_hdu"),
    (_float_andmask, "bad_dtype"), (_andmask_short, "bad_shape"), (_text_fiberid, "bad_dtype"),
    (_numeric_objtype, "bad_dtype"), (_coeff1_zero, "bad_units"), (_coeff0_text, "corrupt_file"),
])
def test_malformed_plate_is_a_typed_error(plate, edit, code):
    with pytest.raises(InputError) as e:
        read_spectra(Source(_rewrite(plate, edit), name="spPlate-1198-52669.fits"))
    assert e.value.code == code, e.value
    assert not e.value.detail.startswith(GENERIC)


@pytest.mark.parametrize("hdu,into", [(0, 50_000), (1, 7), (2, 100_000), (4, 2880),
                                      (5, -1000), (5, 100)])
def test_truncated_plate_is_corrupt_file(plate, hdu, into):
    """Cut inside an HDU the reader reaches (flux .. PLUGMAP; a negative offset cuts its
    header): the size it declares is not there."""
    cut = Source(plate).fits[hdu].data_offset + into
    with pytest.raises(InputError) as e:
        read_spectra(Source(plate[:cut]))
    assert e.value.code == "corrupt_file" and not e.value.detail.startswith(GENERIC)


def test_a_plate_cut_between_hdus_has_no_plugmap(plate):
    """Cut cleanly after ANDMASK (a whole number of HDUs): the plug map is missing."""
    src = Source(plate)
    end = src.fits[3].data_offset - 2880  # the end of HDU2's padded data
    with pytest.raises(InputError) as e:
        read_spectra(Source(plate[:end]))
    assert e.value.code == "missing_hdu" and "PLUGMAP" in e.value.detail


def test_a_plate_cut_inside_sky_reads_with_a_warning(plate):
    """HDU6 (SKY) is never read, so a file cut inside it still gives every fibre, each
    warned, as a truncated SDSS spec file is."""
    _, spectra = read_spectra(Source(plate[: len(plate) - 5000]))
    assert len(spectra) == len(FIBRES)
    assert all("truncated?" in s.meta["warnings"][-1] for s in spectra)


def test_a_header_claiming_a_huge_plate_allocates_nothing(plate):
    """NAXIS2 = 10⁶ fibres (15 GB of flux) in an 0.8 MB file: refused from the header alone,
    before any array exists."""
    i = plate.index(b"NAXIS2  = ")
    data = plate[:i + 10] + b"1000000".rjust(20) + plate[i + 30:]
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as e:
            read_spectra(Source(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.code == "too_large"
    assert peak < 4 * 1024 * 1024


# ---- `specula classify` on the plate: one row per fibre -------------------------------------
def test_specula_classify_gives_one_row_per_fibre(tmp_path, plate, sdss_spec_path):
    """The shipped model, from another directory: the real spec file first, then the plate.
    Fibre 63 gets the class the spec file gets; the sky fibre is flagged (its warning, and
    the no_signal quality flag its noise earns); the dead fibre is
    an error row under its id, in its place (so the exit status is 1, as for any failed
    item, while every other row is there)."""
    path = tmp_path / "spPlate-1198-52669.fits"
    path.write_bytes(plate)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECULA_")}
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")
    r = subprocess.run([sys.executable, "-m", "service.cli", "classify", str(sdss_spec_path),
                        str(path), "--quiet", "--device", "cpu"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 1, r.stderr[-3000:]
    spec, *rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["object_id"] for row in rows] == IDS
    assert all(row["source"] == str(path) for row in rows)
    by_id = {row["object_id"]: row for row in rows}
    assert by_id["1198-52669-0063"]["class"] == spec["class"]
    assert by_id["1198-52669-0063"]["format"] == "sdss-spplate"
    sky = by_id["1198-52669-0061"]
    assert SKY_WARNING in sky["warnings"] and "no_signal" in sky["quality_flags"]
    assert by_id["1198-52669-0065"]["error"]["code"] == "empty_spectrum"
    assert sum("error" in row for row in rows) == 1
