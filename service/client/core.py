"""The client's operations, once for both clients: build the request, read the answer.

Each method is a generator of :class:`~service.client.protocol.Step` (see protocol.py);
``clients.py`` turns each into a blocking method of ``SpeculaClient`` and a coroutine of
``AsyncSpeculaClient``, with the same signature and docstring.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterable
from typing import Any, Literal

import numpy as np
from astropy.table import Table

from service.inference.postprocess import LabelMap

from .inputs import SpectrumInput, cube_body, spectrum_parts
from .protocol import Call, RetryPolicy, Session, SpeculaError, Step
from .results import (
    LightconeResult,
    SpectrumSaliency,
    classification_table,
    errors_of,
    label_map,
    lightcone_result,
    saliency_results,
)

OnError = Literal["warn", "raise", "rows"]


class FileErrors(SpeculaError):
    """Some files or spectra of a request could not be read (``on_error="raise"``); the
    others' results are in ``table``, ``errors`` lists the failed ones."""

    def __init__(self, errors: list[dict[str, str]], table: Table) -> None:
        first = errors[0]
        super().__init__(200, first["code"], f"{len(errors)} of {len(table)} results failed; "
                         f"first: {first['detail']}", first["source"])
        self.errors, self.table = errors, table


def _report(table: Table, on_error: OnError) -> Table:
    errors = errors_of(table)
    if errors and on_error == "raise":
        raise FileErrors(errors, table)
    if errors and on_error == "warn":
        listed = "; ".join(f"{e['source']}: {e['code']}" for e in errors[:5])
        warnings.warn(f"{len(errors)} of {len(table)} results failed ({listed}"
                      f"{', ...' if len(errors) > 5 else ''}): see the status and error_code "
                      "columns", stacklevel=5)
    return table


class ClientCore:
    """What both clients share: the service's URL, the session (key, retries, deadline) and
    the label layout of each model version seen, fetched once."""

    def __init__(self, url: str, api_key: str | None, retry: RetryPolicy | None,
                 deadline_ms: int | None) -> None:
        self.url = url.rstrip("/")
        self.session = Session(api_key or os.environ.get("SPECULA_API_KEY") or None,
                               retry or RetryPolicy(), deadline_ms)
        self._labels: dict[tuple[str, int], LabelMap] = {}

    def _labels_of(self, model: str, version: int) -> Generator[Step, Any, LabelMap]:
        key = (model, version)
        if key not in self._labels:
            r = yield from self.session.send(Call("GET", f"/v2/models/{model}/versions/{version}"))
            self._labels[key] = label_map(r.json())
        return self._labels[key]

    def ready(self) -> Generator[Step, Any, bool]:
        """Whether the service has a model loaded (``/v2/health/ready``)."""
        r = yield Call("GET", "/v2/health/ready")
        return r.status_code == 200

    def classify(self, inputs: SpectrumInput | Iterable[SpectrumInput], *,
                 model: str | None = None, version: int | None = None,
                 format: str | None = None, on_error: OnError = "warn"
                 ) -> Generator[Step, Any, Table]:
        """Classify spectra: paths, file bytes, specutils ``Spectrum``/``Spectrum1D`` objects
        or mappings of arrays (one, or a list). One row per spectrum, in upload order, with
        units; a file or spectrum the service could not read is a row with ``status ==
        "error"`` and its ``error_code``/``error_detail`` (``on_error``: "warn" also warns,
        "raise" raises :class:`FileErrors`, "rows" only keeps the rows). When every file fails,
        or the request does, :class:`SpeculaError` is raised."""
        call = Call("POST", "/v1/spectra:classify", files=spectrum_parts(inputs),
                    params={"model": model, "version": version, "format": format})
        body = (yield from self.session.send(call)).json()
        labels = yield from self._labels_of(body["model"], body["version"])
        return _report(classification_table(body, labels, self.url), on_error)

    def saliency(self, inputs: SpectrumInput | Iterable[SpectrumInput], *,
                 target: str | None = None,
                 method: Literal["gradient", "smoothgrad", "integrated_gradients"] = "gradient",
                 scale: str | None = None, samples: int | None = None,
                 sigma: float | None = None, steps: int | None = None,
                 baseline: str | None = None, seed: int | None = None,
                 index: int | None = None, model: str | None = None,
                 version: int | None = None, format: str | None = None
                 ) -> Generator[Step, Any, list[SpectrumSaliency]]:
        """Saliency maps (docs/saliency.md): which pixels drove the prediction of ``target``
        (a label such as ``STAR:A``, a class, ``top``, ``redshift``; None: the service's
        default, ``auto``, the decision that is still open). Same inputs as
        ``classify``; one :class:`SpectrumSaliency` per spectrum (or only the ``index``-th),
        a spectrum that could not be read with its ``error`` in place."""
        params = {"target": target, "method": method, "scale": scale, "samples": samples,
                  "sigma": sigma, "steps": steps, "baseline": baseline, "seed": seed,
                  "index": index, "model": model, "version": version, "format": format,
                  "out": "json"}
        call = Call("POST", "/v1/spectra:saliency", params=params, files=spectrum_parts(inputs))
        return saliency_results((yield from self.session.send(call)).json())

    def infer_lightcone(self, cube: str | os.PathLike | bytes | np.ndarray, *,
                        model: str | None = None, version: int | None = None,
                        format: str | None = None, z_first: float | None = None,
                        z_last: float | None = None, nu_first_mhz: float | None = None,
                        nu_last_mhz: float | None = None, cell_mpc: float | None = None
                        ) -> Generator[Step, Any, LightconeResult]:
        """Estimate the 21cm parameters of one lightcone: a file (21cmFAST HDF5, FITS cube,
        .npy) or a numpy cube (n_x, n_y, n_los) in mK, line of sight last. A cube off the
        model grid needs its axes, from the file or these arguments (docs/lightcones.md)."""
        body, name, extra = cube_body(cube)
        params = {"model": model, "version": version, "format": format, "z_first": z_first,
                  "z_last": z_last, "nu_first_mhz": nu_first_mhz, "nu_last_mhz": nu_last_mhz,
                  "cell_mpc": cell_mpc, **extra}
        call = Call("POST", "/v1/lightcones:infer", params=params, content=body,
                    headers={"content-type": "application/octet-stream", "x-filename": name})
        return lightcone_result((yield from self.session.send(call)).json())
