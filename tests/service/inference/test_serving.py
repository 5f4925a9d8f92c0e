"""ModelServer: picks its own kind out of a shared repository; a failed reload changes nothing."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np

from service.inference.serving import ModelServer
from service.settings import Settings
from tests.support.tiny_classifier import write_tiny_model


def test_every_kind_is_checked_by_the_one_server_and_bad_reload_keeps_serving(tmp_path):
    write_tiny_model(tmp_path, version=1)
    other = tmp_path / "lightcone_like" / "1"
    shutil.copytree(tmp_path / "spectrum_classifier" / "1", other)
    m = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**m, "name": "lightcone_like",
                                                     "kind": "lightcone-regressor"}))

    async def main():
        server = ModelServer(Settings(model_repository=tmp_path), lambda stats: None)
        first = await server.reload()
        write_tiny_model(tmp_path, version=2, sha256="f" * 64)  # corrupt
        second = await server.reload()
        async with server.use("spectrum_classifier") as served:
            out = await served.pipeline.infer(np.zeros((3, 2, 4076), np.float32))
            version = served.version
        await server.close()
        return first, second, out, version

    first, second, out, version = asyncio.run(main())
    assert first["spectrum_classifier"] == {"status": "ok", "versions": [1],
                                            "provider": {1: "CPUExecutionProvider"}}
    # a spectrum graph under a lightcone manifest fails the lightcone kind's contract check
    assert first["lightcone_like"]["code"] == "preprocess_mismatch"
    assert second["spectrum_classifier"]["status"] == "failed"
    assert second["spectrum_classifier"]["code"] == "checksum_mismatch"
    assert second["spectrum_classifier"]["serving"] == [1]
    assert version == 1 and out["probs"].shape == (3, 6)
