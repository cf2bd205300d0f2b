"""Prometheus metrics (`GET /metrics`, service/api/metrics.py), with the official client.

**One `Metrics` per app.** `create_app` builds one (`Metrics.for_runtime`) and keeps it in
`app.extensions[EXTENSION]`. The HTTP layer records from what it already has: a hook call's
status and `pipeline.Answer` (cards shown, silent and suppressed by rule and kind, the deadline),
and feedback's summary. The pipeline itself knows nothing of metrics.

**Two modes, chosen when prometheus_client is first imported** (it reads PROMETHEUS_MULTIPROC_DIR
when `prometheus_client.values` is imported, which is why nothing here imports it at module level):

- under `spine-cds serve`, `prepare_multiprocess` (called by `cli._serve` before the app is built,
  hence before the fork) points PROMETHEUS_MULTIPROC_DIR at a directory emptied at start, every
  process writes its values to its own files there, `GET /metrics` merges them all
  (`MultiProcessCollector`): whichever worker answers, the totals are those of every worker, past
  ones included (a dead worker's counters stay in its files; gunicorn's `child_exit` calls
  `process_dead`, which only matters for live gauges, of which there are none: counters and
  histograms only);
- everywhere else (the Flask test client, the CLI, the audit), each Metrics has a registry of its
  own, so that apps in one process (tests) never count each other's calls.

**Module-level hooks** for code that has no app: `fhir_fetch_failed(kind)` (service/fhir_server.py)
and `database_error(operation)` (service/store.py) record into the metrics of the app whose request
is running, else into the last Metrics installed in the process (a served worker has exactly one;
the store's writer thread runs outside any request); before any is installed (the CLI's purge, the
audit) they do nothing.

**No clinical text and no identifiers in labels.** Every label value comes from a closed set: the
service ids of services.SERVICES, the loaded rules and the resolver's cards, the card contract's
kinds, and the fixed tuples below; anything else is "other". Recording never raises: a failure is
logged once by type and the call goes on.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EXTENSION = "spine_cds_metrics"
ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"

HOOK_OUTCOMES = ("answered", "deadline", "client_error", "server_error")
CARD_STATES = ("shown", "silent", "suppressed")
FEEDBACK_OUTCOMES = ("accepted", "overridden")
FEEDBACK_RESULTS = ("stored", "duplicate")
# What service/fhir_server.py tells apart when the FHIR server cannot give what was asked.
FHIR_FAILURES = ("not_allowed", "deadline", "timeout", "connection", "status", "unauthorized", "redirect",
                 "too_large", "too_many_pages", "invalid_json", "unexpected_resource", "invalid_base64",
                 "url_refused")
# Where service/store.py catches a database failure.
DATABASE_OPERATIONS = ("record", "queued_write", "feedback", "read", "replay_check", "stats", "purge")
# Hook latency, seconds: fine below the default 1 s deadline (SPINE_CDS_HOOK_DEADLINE; the configured
# one is added when it is not a bound already), coarse past it.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5,
                   2.0, 3.0, 5.0)

_installed: "Metrics | None" = None
_failed_once: set[str] = set()


class Metrics:
    """The service's metrics for one app: counters and a histogram, label values from closed sets."""

    def __init__(self, services, rules, kinds, version: str, code_set: str, deadline: float | None = None):
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, values

        disable_created_metrics()  # no `_created` series: the multiprocess collector has none either
        self.services = frozenset(services)
        self.rules = frozenset(rules)
        self.kinds = frozenset(kinds)
        self.info = {"version": version, "code_set": code_set}
        self.multiprocess_dir = os.environ.get(ENV) if getattr(values.ValueClass, "_multiprocess", False) else None
        # Multiprocess: the values live in the per-process files, read back by the collector at each scrape.
        self.registry = None if self.multiprocess_dir else CollectorRegistry()
        if self.registry is not None:
            self.registry.register(_InfoCollector(self.info))
        buckets = sorted(set(LATENCY_BUCKETS) | ({float(deadline)} if deadline and deadline > 0 else set()))
        made = {"registry": self.registry}
        self.hook_calls = Counter(
            "spine_cds_hook_calls", "Hook calls (POST /cds-services/{id}) by service and outcome: answered, "
            "deadline (answered no cards past SPINE_CDS_HOOK_DEADLINE), client_error (4xx), server_error (5xx)",
            ["service", "outcome"], **made)
        self.hook_seconds = Histogram(
            "spine_cds_hook_duration_seconds", "Time to answer a hook call in the application, seconds",
            ["service"], buckets=buckets, **made)
        self.cards = Counter(
            "spine_cds_cards", "Cards of hook calls answered, by service, rule, kind and state: shown, silent "
            "(silent mode: recorded, not shown), suppressed (feedback already given)",
            ["service", "rule", "kind", "state"], **made)
        self.deadline_hits = Counter(
            "spine_cds_hook_deadline_exceeded", "Hook calls answered no cards because the deadline was reached",
            ["service"], **made)
        self.fhir_failures = Counter(
            "spine_cds_fhir_fetch_failures", "Reads of the EHR's FHIR server that failed, by kind "
            "(not_allowed: a fhirServer off SPINE_CDS_FHIR_ALLOWLIST, not contacted)", ["kind"], **made)
        self.database_errors = Counter(
            "spine_cds_database_errors", "Database failures caught, by operation", ["operation"], **made)
        self.feedback_items = Counter(
            "spine_cds_feedback_items", "Feedback items received and answered 200, by service and outcome",
            ["service", "outcome"], **made)
        self.feedback_results = Counter(
            "spine_cds_feedback_results", "Feedback items stored, or not stored as duplicates of feedback "
            "already stored (same card and outcome)", ["service", "result"], **made)
        self.feedback_unknown = Counter(
            "spine_cds_feedback_unknown_cards", "Cards named by feedback that this service never issued "
            "(distinct per request)", ["service"], **made)
        # Every series of a closed set known from the start, at 0, so that rates work from the first call.
        for service in self.services:
            self.hook_seconds.labels(service)
            self.deadline_hits.labels(service)
            self.feedback_unknown.labels(service)
            for outcome in HOOK_OUTCOMES:
                self.hook_calls.labels(service, outcome)
            for outcome in FEEDBACK_OUTCOMES:
                self.feedback_items.labels(service, outcome)
            for result in FEEDBACK_RESULTS:
                self.feedback_results.labels(service, result)
        for kind in FHIR_FAILURES:
            self.fhir_failures.labels(kind)
        for operation in DATABASE_OPERATIONS:
            self.database_errors.labels(operation)

    @classmethod
    def for_runtime(cls, runtime) -> "Metrics":
        from importlib import metadata

        from .rules import load_rules
        from .rules.resolve import MADE_HERE
        from .services import SERVICES

        try:
            version = metadata.version("spine-coding-cds")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return cls(SERVICES, set(load_rules()) | set(MADE_HERE), runtime.catalogue.kinds, version,
                   runtime.release.title if runtime.release is not None else "unknown",
                   runtime.settings.hook_deadline)

    def install(self) -> "Metrics":
        """The process's metrics for the module-level hooks (outside any request: the last installed)."""
        global _installed
        _installed = self
        return self

    # ------------------------------------------------------------------ label values
    def _service(self, value) -> str:
        return value if value in self.services else OTHER

    def _rule(self, value) -> str:
        return value if value in self.rules else OTHER

    def _kind(self, value) -> str:
        return value if value in self.kinds else OTHER

    # ------------------------------------------------------------------ recording
    def hook_call(self, service_id, status: int, answer, seconds: float) -> None:
        """A POST to a service: its HTTP status and, when the pipeline answered, its `Answer`."""
        service = self._service(service_id)
        timed_out = answer is not None and answer.timed_out
        if 200 <= status < 300:
            outcome = "deadline" if timed_out else "answered"
        elif 400 <= status < 500:
            outcome = "client_error"
        elif status >= 500:
            outcome = "server_error"
        else:
            outcome = OTHER
        self.hook_calls.labels(service, outcome).inc()
        self.hook_seconds.labels(service).observe(max(0.0, seconds))
        if answer is None or not 200 <= status < 300:
            return  # not answered with these cards: nothing of them was shown nor recorded
        if timed_out:
            self.deadline_hits.labels(service).inc()
        for state, counts in (("shown", answer.shown), ("silent", answer.silent), ("suppressed", answer.suppressed)):
            for (rule, kind), n in counts.items():
                self.cards.labels(service, self._rule(rule), self._kind(kind), state).inc(n)

    def feedback(self, service_id, items: list[dict], summary: dict) -> None:
        """Feedback answered 200: its items by outcome, stored or duplicates, and the unknown cards."""
        service = self._service(service_id)
        for item in items:
            outcome = item.get("outcome")
            self.feedback_items.labels(service, outcome if outcome in FEEDBACK_OUTCOMES else OTHER).inc()
        self.feedback_results.labels(service, "stored").inc(summary.get("stored", 0))
        self.feedback_results.labels(service, "duplicate").inc(summary.get("duplicates", 0))
        self.feedback_unknown.labels(service).inc(len(summary.get("unknownCards") or ()))

    def fhir_fetch_failed(self, kind: str) -> None:
        self.fhir_failures.labels(kind if kind in FHIR_FAILURES else OTHER).inc()

    def database_error(self, operation: str) -> None:
        self.database_errors.labels(operation if operation in DATABASE_OPERATIONS else OTHER).inc()

    # ------------------------------------------------------------------ exposition
    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) of a scrape: the Prometheus text format, or OpenMetrics when asked."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        registry = self.registry
        if registry is None:  # every process's files, merged, read now
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry, self.multiprocess_dir)
            registry.register(_InfoCollector(self.info))
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type


class _InfoCollector:
    """spine_cds_info{version, code_set} 1: made at each scrape (no file, no gauge mode needed)."""

    def __init__(self, info: dict):
        self.labels = dict(info)

    def collect(self):
        from prometheus_client.core import InfoMetricFamily

        yield InfoMetricFamily("spine_cds", "The service's version and the ICD-10-CM release loaded", value=self.labels)


# ---------------------------------------------------------------------- module-level hooks
def current() -> Metrics | None:
    """The metrics of the app whose request is running, else the last installed in this process."""
    if _installed is None:
        return None
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_app_context():
        return flask.current_app.extensions.get(EXTENSION) or _installed
    return _installed


def fhir_fetch_failed(kind: str) -> None:
    """A read of the FHIR server failed (service/fhir_server.py): `kind` one of FHIR_FAILURES."""
    safely("fhir", lambda m: m.fhir_fetch_failed(kind))


def database_error(operation: str) -> None:
    """A database failure caught by service/store.py: `operation` one of DATABASE_OPERATIONS."""
    safely("database", lambda m: m.database_error(operation))


def safely(what: str, record) -> None:
    """`record(metrics)` with the current metrics (none: nothing), never raising."""
    metrics = current()
    if metrics is None:
        return
    try:
        record(metrics)
    except Exception as exc:  # noqa: BLE001 - a metric must never fail the work it counts
        if what not in _failed_once:
            _failed_once.add(what)
            log.warning("metrics: could not record a %s metric (%s)", what, type(exc).__name__)


# ---------------------------------------------------------------------- multiprocess (serve)
def prepare_multiprocess(data_dir) -> Path:
    """Under `spine-cds serve`, in the master before the app is built: the directory of the
    processes' metric files (PROMETHEUS_MULTIPROC_DIR when set, else `<data_dir>/metrics`), its
    `*.db` files of an earlier run removed, and the variable set for this process and the workers
    it forks. prometheus_client picks its value class when `prometheus_client.values` is first
    imported: nothing imports it before this runs; should something have, the choice is made again
    (no metric exists yet then)."""
    directory = Path(os.environ.get(ENV) or Path(data_dir) / "metrics").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.db"):
        old.unlink()
    os.environ[ENV] = str(directory)
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()
    return directory


def process_dead(pid: int) -> None:
    """gunicorn's child_exit: a worker is gone (its counters stay in its files; live gauges go)."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)
    except Exception as exc:  # noqa: BLE001 - never stop the arbiter for this
        log.warning("metrics: mark_process_dead(%d) failed (%s)", pid, type(exc).__name__)
