"""Structured JSON logs, one object per line, carrying the W3C trace context of the request.

The trace context lives in a ContextVar set by the trace middleware, so any log call made
while handling a request (router, pipeline, batcher callbacks on the loop) is stamped with
its ``trace_id`` without passing it around.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar

import orjson

trace_context: ContextVar[dict[str, str] | None] = ContextVar("trace_context", default=None)

# attributes every LogRecord has; anything else was passed via ``extra=`` and is logged
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace_context.get()
        if ctx:
            out.update(ctx)
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str = "info") -> None:
    """JSON on stderr for our loggers and uvicorn's (its access log is replaced by ours)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
