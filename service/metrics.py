"""Every Prometheus metric of the service, defined once, fed through one ``record()``.

After vLLM's metrics logger: the batcher and the pipeline never touch prometheus-client; they
hand small frozen stats records to :meth:`Metrics.record`, which turns each into observations.
All names carry the ``specula_`` prefix and a unit suffix, every metric has a help string and
the shared label set (model, version). Each :class:`Metrics` owns its registry, so every app
(and every test) starts from zero. The Triton counterpart of each metric is in docs/service.md.

Under ``specula serve --workers N`` (service/api/workers.py) prometheus-client runs in its
multiprocess mode: each worker's samples go to files in ``PROMETHEUS_MULTIPROC_DIR`` and
:meth:`Metrics.exposition` reads every worker's. Counters and histograms are summed; the queue
gauges are summed over live workers; ``specula_model_info`` keeps a ``pid`` label, one series
per worker, so a reload can be followed worker by worker. That is why it is a gauge and not an
``Info`` (which the multiprocess mode cannot export), and why a retired version is set to 0
before it is removed (a worker's file keeps a removed series' last value): dashboards count
``specula_model_info == 1``.

Process metrics (``process_resident_memory_bytes``, ``process_cpu_seconds_total``,
``process_open_fds``, ...: prometheus-client's standard names, read from ``/proc``): a single
process registers prometheus-client's ``ProcessCollector`` on its registry. The multiprocess
mode has no process metrics (its collector reads only the sample files, and a gauge written to
them would be as old as the worker's last write), so there :class:`WorkerProcessCollector`
reads ``/proc/<pid>`` of every live worker at scrape time — the workers share one host, and
the live-gauge files in ``PROMETHEUS_MULTIPROC_DIR`` name their pids — and exports the same
names with a ``pid`` label: fresh values per worker, whichever worker answers the scrape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LABELS = ("model", "version")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by the --workers supervisor
Outcome = Literal["success", "rejected", "bad_input", "timeout", "error"]
OUTCOMES: tuple[Outcome, ...] = ("success", "rejected", "bad_input", "timeout", "error")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))  # 1 .. 4096 rows


# ---- the stats records the data path hands over -------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestStats:
    """One finished request (any endpoint that runs a model)."""

    model: str
    version: str
    outcome: Outcome
    latency_s: float
    items: int = 0  # spectra (rows) in the request
    endpoint: str = "infer"  # "saliency" / "introspect": counted in the specula_explain_* family


@dataclass(frozen=True, slots=True)
class PreprocessStats:
    """Decode + preprocess of one request, run in the worker pool."""

    model: str
    version: str
    seconds: float


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One executed batch: its size, its compute time and the queue wait of each request part."""

    model: str
    version: str
    size: int
    compute_s: float
    queue_waits_s: tuple[float, ...] = ()
    endpoint: str = "infer"


@dataclass(frozen=True, slots=True)
class QueueStats:
    model: str
    version: str
    depth: int  # rows waiting
    endpoint: str = "infer"


@dataclass(frozen=True, slots=True)
class ModelLoadStats:
    """A model version went live (loaded=True) or was retired (loaded=False)."""

    model: str
    version: str
    provider: str = ""
    sha256: str = ""
    loaded: bool = True


Stats = RequestStats | PreprocessStats | BatchStats | QueueStats | ModelLoadStats

# The histograms, a row each: (attribute, name, help, buckets). They differ only in these four
# (every latency shares LATENCY_BUCKETS, every batch size BATCH_BUCKETS), so a table shows
# that at a glance and the classification and saliency families cannot drift apart in how
# they are built. The saliency rows get the endpoint label on top of LABELS.
HistogramRow = tuple[str, str, str, tuple[float, ...]]
INFER_HISTOGRAMS: tuple[HistogramRow, ...] = (
    ("request_latency", "specula_request_duration_seconds",
     "End-to-end request latency, from the first byte handled to the response built.",
     LATENCY_BUCKETS),
    ("queue_wait", "specula_queue_duration_seconds",
     "Time a request part waited in the batcher queue before its batch started.",
     LATENCY_BUCKETS),
    ("preprocess", "specula_preprocess_duration_seconds",
     "Decode + preprocess time of one request (worker pool, off the event loop).",
     LATENCY_BUCKETS),
    ("compute", "specula_compute_duration_seconds",
     "ONNX Runtime time of one executed batch (inputs in, outputs out).", LATENCY_BUCKETS),
    ("batch_size", "specula_batch_size_rows", "Rows (spectra) per executed batch.",
     BATCH_BUCKETS),
)
EXPLAIN_HISTOGRAMS: tuple[HistogramRow, ...] = (
    ("explain_latency", "specula_explain_request_duration_seconds",
     "End-to-end saliency/introspection request latency.", LATENCY_BUCKETS),
    ("explain_compute", "specula_explain_compute_duration_seconds",
     "ONNX Runtime time of one saliency batch (gradient and forward rows).", LATENCY_BUCKETS),
    ("explain_queue_wait", "specula_explain_queue_duration_seconds",
     "Time a saliency request part waited in its own batcher queue.", LATENCY_BUCKETS),
    ("explain_batch_size", "specula_explain_batch_size_rows",
     "Rows (noisy copies, path steps, forward rows) per saliency batch.", BATCH_BUCKETS),
)
# a live worker's gauge file (multiprocess_mode live*), removed by mark_process_dead
LIVE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


class WorkerProcessCollector(Collector):
    """The process metrics of every live worker under ``--workers``, labelled by ``pid``
    (see the module docstring for why not ``ProcessCollector`` on the registry)."""

    def __init__(self, path: str, proc: str = "/proc") -> None:
        self.path = Path(path)
        self.proc = proc

    def pids(self) -> list[int]:
        """Workers with a live-gauge file and a ``/proc`` entry (a killed worker's file can
        outlive it until the supervisor marks it dead)."""
        found = {int(m.group(1)) for f in self.path.iterdir() if (m := LIVE_FILE.match(f.name))}
        found.add(os.getpid())  # this worker, even before its first gauge is written
        return sorted(p for p in found if os.path.exists(f"{self.proc}/{p}"))

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.pids():
            one = ProcessCollector(pid=lambda pid=pid: pid, proc=self.proc, registry=None)
            for metric in one.collect():
                out = merged.setdefault(metric.name, Metric(metric.name, metric.documentation,
                                                            metric.type))
                for sample in metric.samples:
                    out.add_sample(sample.name, {**sample.labels, "pid": str(pid)},
                                   sample.value)
        yield from merged.values()


class Metrics:
    # set from INFER_HISTOGRAMS and EXPLAIN_HISTOGRAMS by _add_histograms
    request_latency: Histogram
    queue_wait: Histogram
    preprocess: Histogram
    compute: Histogram
    batch_size: Histogram
    explain_latency: Histogram
    explain_compute: Histogram
    explain_queue_wait: Histogram
    explain_batch_size: Histogram

    def __init__(self, registry: CollectorRegistry | None = None,
                 queue_capacity_rows: int = 0) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.queue_capacity_rows = queue_capacity_rows
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}
        r = self.registry
        self.requests = Counter(
            "specula_requests_total",
            "Inference requests finished, by outcome (success, rejected, bad_input, timeout, "
            "error).", [*LABELS, "outcome"], registry=r)
        self._add_histograms(INFER_HISTOGRAMS, LABELS)
        self.queue_depth = Gauge(
            "specula_queue_depth_rows",
            "Rows waiting in the batcher queue.", LABELS, registry=r,
            multiprocess_mode="livesum")
        self.queue_capacity = Gauge(
            "specula_queue_capacity_rows",
            "Rows the batcher queue holds before rejecting (SPECULA_MAX_QUEUE_ROWS); "
            "depth / capacity is the saturation the alerts watch.", LABELS, registry=r,
            multiprocess_mode="livesum")
        self.items = Counter(
            "specula_inference_items_total",
            "Spectra (rows) run through the model.", LABELS, registry=r)
        self.batches = Counter(
            "specula_batches_total", "Batches executed.", LABELS, registry=r)
        # saliency / introspection: the same measurements in their own family, labelled by
        # endpoint, so classification dashboards and alerts keep meaning classification
        ex = [*LABELS, "endpoint"]
        self.explain_requests = Counter(
            "specula_explain_requests_total", "Saliency/introspection requests finished, by "
            "outcome.", [*ex, "outcome"], registry=r)
        self._add_histograms(EXPLAIN_HISTOGRAMS, ex)
        self.explain_rows = Counter(
            "specula_explain_rows_total", "Rows run through the saliency graphs.", ex,
            registry=r)
        self.explain_queue_depth = Gauge(
            "specula_explain_queue_depth_rows", "Rows waiting in the saliency queue.", ex,
            registry=r, multiprocess_mode="livesum")
        # label order as prometheus-client's Info wrote it, which this gauge replaced
        self.model_info = Gauge(
            "specula_model_info", "Loaded model versions (1): execution provider and sha256 "
            "of the ONNX file; one series per worker process under --workers.",
            ("model", "provider", "sha256", "version"), registry=r,
            multiprocess_mode="liveall")
        self._info_labels: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        if not os.environ.get(MULTIPROC_ENV):  # multiprocess: WorkerProcessCollector
            ProcessCollector(registry=r)

    def _add_histograms(self, rows: tuple[HistogramRow, ...], labels: Sequence[str]) -> None:
        """Registers one histogram a row, in the table's order: that order is the order of the
        exposition, which stays as it was when each histogram was written out by hand."""
        for attribute, name, documentation, buckets in rows:
            setattr(self, attribute, Histogram(name, documentation, labels, buckets=buckets,
                                               registry=self.registry))

    def _child(self, metric, labels: tuple[str, ...]):
        """``metric.labels(*labels)``, remembered: prometheus_client validates and locks on
        every ``labels()`` call, and a request records about ten of them. Only families whose
        children are never removed go through here."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def record(self, stats: Stats) -> None:
        labels = (stats.model, stats.version)
        if getattr(stats, "endpoint", "infer") != "infer":
            self._record_explain(stats)
            return
        child = self._child
        match stats:
            case RequestStats():
                child(self.requests, (*labels, stats.outcome)).inc()
                child(self.request_latency, labels).observe(stats.latency_s)
            case PreprocessStats():
                child(self.preprocess, labels).observe(stats.seconds)
            case BatchStats():
                child(self.batch_size, labels).observe(stats.size)
                child(self.compute, labels).observe(stats.compute_s)
                child(self.items, labels).inc(stats.size)
                child(self.batches, labels).inc()
                wait = child(self.queue_wait, labels)
                for w in stats.queue_waits_s:
                    wait.observe(w)
            case QueueStats():
                child(self.queue_depth, labels).set(stats.depth)
            case ModelLoadStats(loaded=True):
                self._retire_info(labels)
                info = (stats.model, stats.provider, stats.sha256, stats.version)
                self._info_labels[labels] = info
                self.model_info.labels(*info).set(1)
                for outcome in OUTCOMES:  # export zeros so rates work from the first scrape
                    self.requests.labels(*labels, outcome)
                self.queue_depth.labels(*labels).set(0)
                if self.queue_capacity_rows:
                    self.queue_capacity.labels(*labels).set(self.queue_capacity_rows)
            case ModelLoadStats(loaded=False):
                self._retire_info(labels)
                if self.queue_capacity_rows:
                    self.queue_capacity.remove(*labels)

    def _retire_info(self, labels: tuple[str, str]) -> None:
        info = self._info_labels.pop(labels, None)
        if info is not None:
            self.model_info.labels(*info).set(0)  # what a multiprocess file keeps
            self.model_info.remove(*info)

    def _record_explain(self, stats: Stats) -> None:
        labels = (stats.model, stats.version, stats.endpoint)  # type: ignore[union-attr]
        match stats:
            case RequestStats():
                self.explain_requests.labels(*labels, stats.outcome).inc()
                self.explain_latency.labels(*labels).observe(stats.latency_s)
            case BatchStats():
                self.explain_batch_size.labels(*labels).observe(stats.size)
                self.explain_compute.labels(*labels).observe(stats.compute_s)
                self.explain_rows.labels(*labels).inc(stats.size)
                for w in stats.queue_waits_s:
                    self.explain_queue_wait.labels(*labels).observe(w)
            case QueueStats():
                self.explain_queue_depth.labels(*labels).set(stats.depth)

    def exposition(self) -> bytes:
        path = os.environ.get(MULTIPROC_ENV)
        if not path:
            return generate_latest(self.registry)
        registry = CollectorRegistry()  # every worker's files, this one's included
        MultiProcessCollector(registry, path)
        registry.register(WorkerProcessCollector(path))
        return generate_latest(registry)
