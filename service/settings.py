"""Every knob of the service in one place: ``SPECULA_*`` environment variables over a settings file.

One ``Settings`` object is built at start-up and handed down; nothing else reads the
environment. Precedence, highest first: ``specula serve`` flags, ``SPECULA_<NAME>`` variables,
the settings file named by ``SPECULA_CONFIG`` (or ``--config``), the defaults below. The file
is TOML (``.toml``), JSON (``.json``) or dotenv (``.env``, with the ``SPECULA_`` names); its
keys are the field names (``max_batch_size = 64``) and an unknown key is an error, so a typo
cannot silently fall back to a default.

The settings table of ``README.md`` and the epilog of ``specula serve --help`` are both
generated from this class (:func:`settings_table`, :func:`settings_help`): they cannot drift.
``python -m service.settings`` prints the table.
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "SPECULA_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
_config_override: ContextVar[Path | None] = ContextVar("specula_config", default=None)
# how the tables show the default of model_repository: the absolute path differs per install
SHIPPED_MODELS_TEXT = "<install>/models"


def shipped_model_repository() -> Path:
    """The ``models/`` beside the ``service`` package (a source or editable install), absolute,
    so that `specula serve` and `specula classify` find the shipped models from any directory;
    an install without it (a wheel in an image) falls back to ``./models``, which the images
    override with ``SPECULA_MODEL_REPOSITORY``."""
    shipped = Path(__file__).resolve().parents[1] / "models"
    return shipped if shipped.is_dir() else Path("models").absolute()


def command_model_repository() -> Path:
    """The repository of a command that builds no ``Settings`` (`specula classify`) when no
    ``--repository`` is given: ``SPECULA_MODEL_REPOSITORY`` as for `specula serve`, else the
    shipped one, so that both commands find the same models."""
    env = os.environ.get(ENV_PREFIX + "MODEL_REPOSITORY")
    return Path(env) if env else shipped_model_repository()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    config: Path | None = Field(None, description="settings file (TOML, JSON or .env); "
                                "environment variables override it")

    # where models live and which are served
    model_repository: Path = Field(
        default_factory=shipped_model_repository,
        json_schema_extra={"default_text": SHIPPED_MODELS_TEXT},
        description="Triton-style repository root; default: the models/ shipped beside the "
                    "installed package, whatever the current directory")
    models: list[str] = Field(default_factory=list, description="model names to serve, as JSON "
                              "(`[\"spectrum_classifier\"]`); [] = all")
    default_model: str = Field("spectrum_classifier", description="model of /v1 when none named")
    version_policy: Literal["all", "latest"] = Field(
        "all", description="load every version (pinnable per request) or only the latest"
    )

    # HTTP
    host: str = Field("127.0.0.1", description="bind address (the images set 0.0.0.0)")
    port: int = Field(8000, description="port")
    max_body_bytes: int = Field(256 * 1024 * 1024, description="larger bodies get 413 unread")
    max_inflight_bytes: int = Field(
        1024 * 1024 * 1024, description="declared bodies of all requests in flight; over: 503")
    max_file_bytes: int = Field(128 * 1024 * 1024, description="limit per decoded file")
    max_files: int = Field(1000, description="files per multipart request")
    graceful_shutdown_s: float = Field(60.0, description="SIGTERM: max time to drain accepted work")
    admin_token: SecretStr | None = Field(None, description="Bearer token for reload; unset = off")
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="keys one of which every endpoint needs but the "
        "health probes, /metrics and the admin routes (token), as JSON (`[\"k1\",\"k2\"]`), sent as `Authorization: Bearer <key>` or "
        "`X-API-Key`; [] and no file = no auth; an empty key stops the start")
    api_keys_file: Path | None = Field(
        None, description="file with one API key per line (# comments); adds to api_keys")
    metrics_require_key: bool = Field(
        False, description="with API keys configured, /metrics needs one too; false keeps "
        "Prometheus scrapes working without a credential (keep /metrics off public networks)")
    cors_allow_origins: list[str] = Field(
        default_factory=list, description="CORS allow-list as JSON (`[\"https://a.org\"]`); "
        "[] = CORS off")
    log_level: str = Field("info", description="JSON logs on stderr")
    access_log: bool = Field(True, description="one JSON line per request")
    hot_routes: bool = Field(
        True, description="answer OIP infer and /v1/spectra:classify ahead of FastAPI's router "
        "(same handlers; ~250 µs less event-loop time per request); false = FastAPI only")

    # batching and backpressure
    max_batch_size: int = Field(256, description="rows (spectra) per executed batch")
    max_queue_delay_ms: float = Field(
        0.0, description="wait this long for a fuller batch; 0 = run as soon as the model is "
        "free (batches then form from what queued during the previous one)")
    balance_delay_ms: float = Field(
        5.0, ge=0, description="while one batch runs, an idle instance waits up to this long "
        "for as many rows as that batch holds (even batches under steady load: -11 % CPU per "
        "spectrum at c=32); an idle model never waits; 0 = off")
    max_queue_rows: int = Field(16384, description="queued rows per model before rejecting")
    queue_full_status: Literal[429, 503] = Field(429, description="status when the queue is full")
    retry_after_s: int = Field(1, description="Retry-After sent with queue-full rejections")
    deadline_header: str = Field(
        "x-specula-timeout-ms", description="request header: ms budget before 504"
    )

    # saliency and introspection (their own queues; they yield to inference)
    saliency_max_batch_rows: int = Field(
        64, ge=1, description="gradient rows (noisy copies, path steps) per executed saliency "
        "or introspection batch of a spectrum model: small, so a classification batch never "
        "shares the CPU with a long one")
    saliency_max_queue_rows: int = Field(
        4096, ge=1, description="queued saliency (or introspection) rows per model before "
        "rejecting")
    lightcone_saliency_max_batch_rows: int = Field(
        4, ge=1, description="lightcone gradient rows per executed batch (each row keeps "
        "several full-size activation cubes alive inside ONNX Runtime)")

    # lightcones
    lightcone_max_bytes: int | None = Field(
        None, ge=1, description="working memory all lightcone requests in flight may reserve "
        "(bodies, decoded and resampled cubes, saliency rows); a request waits for room, one "
        "larger than this gets 413; unset = 4 × SPECULA_MAX_FILE_BYTES")

    # runtime
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto (CUDA if available), cpu, cuda")
    intra_op_threads: int = Field(0, description="ORT intra-op threads per run of a spectrum "
                                  "model; 0 = 1, with max_concurrent_batches = usable CPUs "
                                  "(lightcone models: usable CPUs - 1)")
    max_concurrent_batches: int = Field(
        0, ge=0, description="batches of one model run at once (Triton's instance count: an "
        "idle one takes what is queued); 0 = usable CPUs ÷ intra-op threads on CPU, 1 on CUDA")
    preprocess_workers: int = Field(0, description="decode/preprocess threads; 0 = CPU count")
    workers: int = Field(
        1, ge=1, le=256, description="service processes on the one port (one GIL each: "
        "decoding and HTTP scale with them); each loads every model and has its own queue; "
        "metrics are summed over them")

    @field_validator("api_keys")
    @classmethod
    def _no_blank_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        """An empty key would be dropped from the accepted set, and a list of only empty keys
        would switch authentication off without a word: refuse the start instead."""
        if any(not k.get_secret_value().strip() for k in keys):
            raise ValueError("api_keys holds an empty (or whitespace-only) key; remove it, "
                             "or set api_keys to [] to run without authentication")
        return keys

    @model_validator(mode="after")
    def _key_file_has_keys(self) -> Settings:
        """A key file that holds no key (empty, only comments, unreadable) would leave the
        service without authentication while the operator believes it has some: refuse."""
        if self.api_keys_file is not None:
            try:
                keys = self.api_key_values()
            except OSError as exc:
                raise ValueError(f"api_keys_file {self.api_keys_file}: {exc.strerror}") from None
            if not keys:
                raise ValueError(f"api_keys_file {self.api_keys_file} holds no key; add one, "
                                 "or unset api_keys_file to run without authentication")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        path = _config_override.get() or os.environ.get(CONFIG_ENV)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path:
            sources.append(FileSettingsSource(settings_cls, Path(path)))
        return tuple(sources)

    def api_key_values(self) -> list[bytes]:
        """Every accepted API key (env/file list plus the key file), as bytes."""
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append(line)
        return [k.encode() for k in keys if k]


class FileSettingsSource(PydanticBaseSettingsSource):
    """Values from a TOML / JSON / dotenv file; unknown keys are an error."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.values = self._load()

    def _load(self) -> dict[str, Any]:
        suffix = self.path.suffix.lower()
        if suffix == ".toml":
            data = tomllib.loads(self.path.read_text())
        elif suffix == ".json":
            data = json.loads(self.path.read_text())
        elif suffix == ".env" or self.path.name.startswith(".env"):
            source = DotEnvSettingsSource(self.settings_cls, env_file=self.path,
                                          env_prefix=ENV_PREFIX)
            raw = {k.lower().removeprefix(ENV_PREFIX.lower()): v
                   for k, v in source.env_vars.items()}
            # dotenv values are strings, as in the environment: decode JSON lists like env does
            data = {k: (json.loads(v) if isinstance(v, str) and v.startswith("[") else v)
                    for k, v in raw.items()}
        else:
            raise ValueError(f"settings file {self.path}: use .toml, .json or .env")
        if not isinstance(data, dict):  # a ValueError, like every other bad-file case
            raise ValueError(f"settings file {self.path}: not a table of settings")  # noqa: TRY004
        unknown = sorted(set(data) - set(self.settings_cls.model_fields) - {"config"})
        if unknown:
            raise ValueError(f"settings file {self.path}: unknown settings {unknown}")
        data.pop("config", None)
        return data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings from flags (``overrides``) > env > ``config`` file (or ``SPECULA_CONFIG``)."""
    token = _config_override.set(Path(config) if config else None)
    try:
        settings = Settings(**overrides)
    finally:
        _config_override.reset(token)
    if config:
        settings = settings.model_copy(update={"config": Path(config)})
    return settings


def _default_text(name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default_text" in extra:  # a default that differs per install
        return str(extra["default_text"])
    if field.default_factory is not None:
        return json.dumps(field.default_factory())
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def settings_rows() -> list[tuple[str, str, str]]:
    """(env variable, default, meaning) for every field, in declaration order."""
    return [(ENV_PREFIX + name.upper(), _default_text(name, f), f.description or "")
            for name, f in Settings.model_fields.items()]


def settings_table() -> str:
    """The Markdown table of README.md (between its settings-table markers)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{env}` | `{default}` | {text.replace('|', '/')} |"
              for env, default, text in settings_rows()]
    return "\n".join(lines) + "\n"


def settings_help() -> str:
    """The epilog of ``specula serve --help``."""
    rows = settings_rows()
    width = max(len(env) for env, _, _ in rows)
    lines = [("settings (environment variable, default, meaning; precedence: flags > "
              "environment > SPECULA_CONFIG file > default):")]
    lines += [f"  {env:<{width}}  {default:<22} {text}" for env, default, text in rows]
    return "\n".join(lines)


@lru_cache
def get_settings() -> Settings:
    return Settings()


if __name__ == "__main__":
    print(settings_table(), end="")
