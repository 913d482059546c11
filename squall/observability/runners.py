"""The recorder each runner builds: which backends, from its options and the environment.

- ``squall run``: running totals for the console, Prometheus when ``--metrics-port`` is given,
  a progress log line every N seconds when there is no terminal.
- the KCL shard process: Prometheus in multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is
  set (``squall kcl --metrics-port`` sets it), a progress log line every
  ``SQUALL_PROGRESS_INTERVAL`` seconds (default 60).
- the Lambda consumer: EMF documents and one structured log line per invocation.
Any runner adds OpenTelemetry when ``SQUALL_OTEL=1`` and the ``otel`` extra is installed.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from squall.errors import MetricsError
from squall.observability.logs import text_fields
from squall.observability.metrics import BatchSample, Recorder
from squall.observability.progress import PeriodicLog, Totals

invocation_log = logging.getLogger("squall.invocation")
PROGRESS_ENV = "SQUALL_PROGRESS_INTERVAL"
OTEL_ENV = "SQUALL_OTEL"


def parse_metrics_port(value: str) -> tuple[str, int]:
    """``PORT`` or ``ADDR:PORT`` (all interfaces when no address is given); an IPv6 address is
    written in brackets, ``[::1]:9108``, and returned without them."""
    addr, _, port = value.rpartition(":")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise ValueError(f"'{value}' is not [ADDR:]PORT with a port number in 1-65535")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    return (addr or "0.0.0.0"), int(port)


def _otel(recorder: Recorder) -> None:
    """Add the OpenTelemetry backend when ``SQUALL_OTEL`` asks for it; without the ``otel`` extra
    that is one ``MetricsError`` saying so (not an ``ImportError`` traceback)."""
    if os.environ.get(OTEL_ENV, "").lower() in ("1", "true", "yes"):
        try:
            from squall.observability.otel import OtelBackend
        except ImportError as exc:
            raise MetricsError(
                f"{OTEL_ENV}={os.environ[OTEL_ENV]} asks for OpenTelemetry metrics and traces, but "
                f"the 'otel' extra is not installed (pip install 'squall[otel]'): {exc}"
            ) from None

        recorder.backends.append(OtelBackend())


def local_recorder(
    topology: str, *, metrics_port: str | None = None, log_every: float | None = None
) -> Recorder:
    """Totals first (the console reads them); Prometheus served from this process when asked."""
    totals = Totals()
    recorder = Recorder(topology, [totals])
    recorder.totals = totals  # type: ignore[attr-defined]
    if metrics_port:
        from squall.observability.prometheus import PrometheusBackend, serve

        backend = PrometheusBackend(topology=topology)
        addr, port = parse_metrics_port(metrics_port)
        serve(port, backend.registry, addr)
        recorder.backends.append(backend)
        recorder.idle()  # the heartbeat starts with the run: a hang before any batch shows too
    if log_every:
        recorder.periodic = PeriodicLog(totals, log_every)  # type: ignore[attr-defined]
        recorder.backends.append(recorder.periodic)  # type: ignore[attr-defined]
    _otel(recorder)
    return recorder


def kcl_recorder(topology: str) -> Recorder:
    totals = Totals()
    recorder = Recorder(
        topology, [totals, PeriodicLog(totals, float(os.environ.get(PROGRESS_ENV) or 60))]
    )
    from squall.observability.prometheus import MULTIPROC_ENV, PrometheusBackend

    if os.environ.get(MULTIPROC_ENV):
        recorder.backends.append(PrometheusBackend(topology=topology))
    _otel(recorder)
    return recorder


class InvocationLog:
    """One structured INFO line per Lambda invocation (records, outcomes, duration, lag, first failure)."""

    def record(self, s: BatchSample) -> None:
        fields = s.log_fields()
        level = logging.INFO if s.status == "ok" else logging.ERROR
        text = text_fields(fields)
        invocation_log.log(level, "invocation: %s", text, extra={"fields": fields})


class LambdaObserver:
    """The Lambda consumer's recorder plus the per-invocation flush of its EMF documents."""

    def __init__(self, topology: str):
        from squall.observability.emf import EmfBackend

        self.emf = EmfBackend(service=topology)
        self.recorder = Recorder(topology, [self.emf, InvocationLog()])
        _otel(self.recorder)

    def deadline_stop(self) -> None:
        """This invocation stopped before its deadline (``DeadlineStops`` in its EMF document)."""
        self.emf.deadline_stops += 1

    def flush(self, context: Any = None) -> None:
        """Print this invocation's EMF documents; a metrics problem never fails the invocation."""
        try:
            self.emf.flush(context)
        except Exception:
            invocation_log.exception("EMF metrics could not be written; the batch is unaffected")


def lambda_logging() -> None:
    """Give Lambda's log handler squall's formatter when ``SQUALL_LOG_FORMAT`` is set: first
    thing in a handler's init, so init's own lines (warnings at load) have the format too."""
    from squall.observability.logs import FORMAT_ENV, install_formatter

    if os.environ.get(FORMAT_ENV):
        install_formatter()


def lambda_observer(topology: str) -> LambdaObserver:
    """Also gives Lambda's log handler squall's formatter when ``SQUALL_LOG_FORMAT`` is set."""
    lambda_logging()
    invocation_log.setLevel(logging.INFO)
    return LambdaObserver(topology)
