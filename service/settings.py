"""Every knob of the service in one place, read from ``SPECULA_*`` environment variables.

One ``Settings`` object is built at start-up (``get_settings()``) and handed down; nothing
else reads the environment. The table in ``docs/service.md`` lists each field.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPECULA_", extra="ignore")

    # where models live and which are served
    model_repository: Path = Field(Path("models"), description="Triton-style repository root")
    models: list[str] = Field(default_factory=list, description="model names to serve; [] = all")
    default_model: str = Field("spectrum_classifier", description="model of /v1 when none named")
    version_policy: Literal["all", "latest"] = Field(
        "all", description="load every version (pinnable per request) or only the latest"
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(256 * 1024 * 1024, description="larger bodies get 413 unread")
    max_inflight_bytes: int = Field(
        1024 * 1024 * 1024, description="declared bodies of all requests in flight; over: 503")
    max_file_bytes: int = Field(128 * 1024 * 1024, description="limit per decoded file")
    max_files: int = Field(1000, description="files per multipart request")
    graceful_shutdown_s: float = Field(60.0, description="SIGTERM: max time to drain accepted work")
    admin_token: SecretStr | None = Field(None, description="Bearer token for reload; unset = off")
    log_level: str = "info"
    access_log: bool = True

    # batching and backpressure
    max_batch_size: int = Field(256, description="rows (spectra) per executed batch")
    max_queue_delay_ms: float = Field(
        0.0, description="wait this long for a fuller batch; 0 = run as soon as the model is "
        "free (batches then form from what queued during the previous one)")
    max_queue_rows: int = Field(16384, description="queued rows per model before rejecting")
    queue_full_status: Literal[429, 503] = 429
    retry_after_s: int = Field(1, description="Retry-After sent with queue-full rejections")
    deadline_header: str = Field(
        "x-specula-timeout-ms", description="request header: ms budget before 504"
    )

    # runtime
    device: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(0, description="ORT intra-op threads; 0 = usable CPUs - 1")
    preprocess_workers: int = Field(0, description="decode/preprocess threads; 0 = CPU count")


@lru_cache
def get_settings() -> Settings:
    return Settings()
