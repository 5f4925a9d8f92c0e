"""What the client says to the service and how it reads the answer, with no I/O in it.

Every operation (classify, saliency, a lightcone) is a generator that yields what it needs
done — a :class:`Call` to send, or a :class:`Pause` to sleep — and receives the
``httpx.Response``. The sync and the async client are only two small loops that perform those
steps (``clients.py``), so the retry policy, the error decoding and the request building exist
once, and both clients behave the same by construction.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 503})  # the service's "not now": a full queue, overload, drain
DEADLINE_HEADER = "x-specula-timeout-ms"  # service/settings.py deadline_header
API_KEY_HEADER = "X-API-Key"  # service/api/deps.py: or Authorization: Bearer <key>


class SpeculaError(Exception):
    """The service refused a request: ``status``, its machine-readable ``code`` (the table in
    docs/service.md, "Errors"), the message, and the file to blame when there is one."""

    def __init__(self, status: int, code: str, detail: str, source: str | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}" + (f" ({source})" if source else ""))
        self.status, self.code, self.detail, self.source = status, code, detail, source


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request, kept as data so that a retry sends it again unchanged."""

    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        params = {k: _query(v) for k, v in self.params.items() if v is not None}
        return http.build_request(self.method, self.path, params=params, headers=self.headers,
                                  content=self.content, files=self.files)


@dataclass(frozen=True, slots=True)
class Pause:
    """Sleep this long before the next step (a retry's wait)."""

    seconds: float


Step = Call | Pause
Operation = Generator[Step, Any, Any]


def _query(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent
    or unreadable."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry 429/503, waiting what ``Retry-After`` asks (else ``backoff`` × 2ⁿ), at most
    ``attempts`` sends and ``max_wait`` seconds of waiting in all: a pipeline must not hang on a
    service that stays full. ``attempts=1`` turns retries off."""

    attempts: int = 5
    max_wait: float = 30.0
    backoff: float = 0.5

    def delay(self, response: httpx.Response, attempt: int, waited: float) -> float | None:
        """The wait before sending again, or None: answer with this response."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.attempts:
            return None
        wait = retry_after(response.headers)
        if wait is None:
            wait = self.backoff * 2 ** (attempt - 1)
        if waited + wait > self.max_wait:
            return None
        return wait


def error_of(response: httpx.Response) -> SpeculaError:
    """The service's error body ``{"error", "code", "source"?}`` → SpeculaError (any other
    body, e.g. a proxy's HTML page, keeps its status and text)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return SpeculaError(response.status_code, body["code"], str(body.get("error", "")),
                            body.get("source"))
    return SpeculaError(response.status_code, "http_error", response.text[:500])


@dataclass(frozen=True, slots=True)
class Session:
    """Per-client settings every request carries: credentials, retries, deadline."""

    api_key: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    deadline_ms: int | None = None  # the service answers 504 once it has passed

    def headers(self) -> dict[str, str]:
        h = {}
        if self.api_key:
            h[API_KEY_HEADER] = self.api_key
        if self.deadline_ms is not None:
            h[DEADLINE_HEADER] = str(int(self.deadline_ms))
        return h

    def send(self, call: Call) -> Generator[Step, Any, httpx.Response]:
        """Send with retries; the final response if it is a 2xx, else its SpeculaError."""
        call = Call(call.method, call.path, call.params, {**self.headers(), **call.headers},
                    call.content, call.files)
        waited, attempt = 0.0, 1
        while True:
            response: httpx.Response = yield call
            wait = self.retry.delay(response, attempt, waited)
            if wait is None:
                break
            yield Pause(wait)
            waited, attempt = waited + wait, attempt + 1
        if response.is_success:
            return response
        raise error_of(response)
