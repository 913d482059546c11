"""Prometheus/OpenMetrics metrics (prometheus-client): the backend, and the scrape endpoint.

``squall run --metrics-port P`` serves its own registry from a thread. Under the KCL each leased
shard is its own Python process, so ``squall kcl --metrics-port P`` uses prometheus-client's
multiprocess mode: every shard process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(set before the daemon starts, inherited by the processes it spawns) and one small server per
host sums them on each scrape (``python -m squall.observability.prometheus``). Gauges of shard
processes that have exited are dropped at scrape time; their counters stay in the totals. A
process's files are named by its PID and its start time (``process_identifier``): the system
gives an exited process's PID to another one sooner or later, and a file named by PID alone
then came back to life — a new shard process wrote on in it, beside the dead shard's heartbeat.

Size (~445 lines): the backend (every metric and its series from the first batch), the process
identity of the multiprocess files, and the host's scrape server with its start time.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from squall.errors import MetricsServerError
from squall.observability.metrics import BATCH_STATUSES, RECORD_OUTCOMES, SPECS, BatchSample

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: What the host's scrape server prints once it listens.
READY = "listening"
#: Seconds: a batch takes milliseconds (small batches) to a minute (a slow warehouse).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


def start_token(pid: int | str = "self") -> str | None:
    """When a process started, in clock ticks after boot (``/proc/PID/stat``, field 22): with its
    PID it names one process for the life of the system. None where ``/proc`` cannot say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[19].decode() if len(fields) > 19 else None


def process_start_time(pid: int | str = "self") -> float:
    """UNIX time a process started (``/proc``: boot time plus its start in clock ticks), as
    prometheus-client's ``process_start_time_seconds`` says it; now where ``/proc`` cannot say."""
    token = start_token(pid)
    try:
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return boot + int(token or "") / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return time.time()


_identity: list = []  # [pid, identifier]: this process's, computed again after a fork


def process_identifier() -> str:
    """How this process's multiprocess files are named: ``PID-START`` (``PID`` where the start
    time is unknown). prometheus-client asks it at every write (it compares it to detect a fork)."""
    pid = os.getpid()
    if not _identity or _identity[0] != pid:
        token = start_token()
        _identity[:] = [pid, f"{pid}-{token}" if token else str(pid)]
    return _identity[1]


def _own_files(directory: str) -> None:
    """Before this process writes its first value: its files named by ``process_identifier``,
    and the live gauges that an exited process of the same name left removed (where the start
    time is unknown, a PID given again: its heartbeat is not this process's). Only where
    prometheus-client chose its multiprocess values at import (the directory was set before the
    process started: a KCL shard process), and once: two value classes would map the same files."""
    value_class = prometheus_values.ValueClass
    if not getattr(value_class, "_multiprocess", False) or hasattr(
        value_class, "squall_identifier"
    ):
        return
    mark_process_dead(process_identifier(), directory)
    value_class = prometheus_values.MultiProcessValue(process_identifier)
    value_class.squall_identifier = True  # type: ignore[attr-defined]
    prometheus_values.ValueClass = value_class


def _name(key: str) -> str:
    """The name prometheus-client wants: counters without their ``_total`` suffix (it adds it)."""
    return SPECS[key].prometheus.removesuffix("_total")


class PrometheusBackend:
    """Counters, histograms and gauges of every batch, in one registry (or multiprocess files)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, topology: str | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        if self.multiprocess:
            _own_files(os.environ[MULTIPROC_ENV])
        r = self.registry

        def counter(key: str) -> Counter:
            s = SPECS[key]
            return Counter(_name(key), s.help, s.labels, registry=r)

        def gauge(key: str, mode: str) -> Gauge:
            s = SPECS[key]
            return Gauge(s.prometheus, s.help, s.labels, registry=r, multiprocess_mode=mode)

        def histogram(key: str) -> Histogram:
            s = SPECS[key]
            return Histogram(s.prometheus, s.help, s.labels, registry=r, buckets=BUCKETS)

        self.records = counter("records")
        self.outcomes = counter("outcomes")
        self.retries = counter("retries")
        self.checkpoint_retries = counter("checkpoint_retries")
        self.retry_reasons = counter("retry_reasons")
        self.batches = counter("batches")
        self.checkpoints = counter("checkpoints")
        self.sink_rows = counter("sink_rows")
        self.cache = counter("cache")
        self.batch_seconds = histogram("batch_seconds")
        self.component_seconds = histogram("component_seconds")
        # One shard is read by one process at a time: the max over live processes is its value
        # (the iterator age: the oldest of the host's shards).
        self.millis_behind = gauge("millis_behind", "livemax")
        self.iterator_age = gauge("iterator_age", "livemax")
        self.iterator_age_ms = gauge("iterator_age_ms", "livemax")  # deprecated: the same in ms
        self.rss = gauge("rss", "livesum")  # under the KCL: all shard processes of the host
        # Per shard process under the KCL (its shard label), one per run under ``squall run``.
        # "livemax": a hung process is alive, so its last value stays and ages; one that exited
        # (its lease lost, its shard ended) leaves the series — its time would age for ever —
        # and a shard taken over is the new owner's (another host's series). Not "max", which
        # keeps the series of exited processes; not "liveall", a pid label per restart.
        self.heartbeat = gauge("heartbeat", "livemax")
        self._beat_shard = ""  # the shard of the last heartbeat ("" under ``squall run``)
        # Set at a batch's first retry (``record_retry``), 0 when a batch ends settled; the time
        # of the last checkpoint beside it: "stuck retrying the warehouse for 10 minutes".
        self.retrying_since = gauge("retrying_since", "livemax")
        self.last_checkpoint = gauge("last_checkpoint", "livemax")
        self._retrying: dict[tuple[str, str], float] = {}  # (topology, shard): since when
        # Retries counted live (``record_retry``) that the batch's sample carries again:
        # (topology, component) -> count; "" for the checkpoint's.
        self._live: dict[tuple[str, str], int] = {}
        self._children: dict[tuple, object] = {}
        self._shards: dict[str, set[str]] = {}  # per topology: shards with a lag series
        # The process's start (``SquallRestarting`` counts its changes): `squall run`'s own;
        # under the KCL the host's scrape server says `squall kcl`'s (a shard process is not the
        # host: the daemon starts one per lease).
        self.started = None if self.multiprocess else gauge("started", "livemax")
        if topology is not None:
            self.start(topology)

    def start(self, topology: str) -> None:
        """Export the series the alerting rules read at 0 before the first batch: ``increase()``
        and ``rate()`` see nothing of a series that appears with its first value (a first
        ``records_failed`` batch raised no alert), and ``sum()`` over no series is no value at all
        (a consumer stuck on its first batch never read as stalled)."""
        for status in BATCH_STATUSES:
            self._child(self.batches, topology, status)
        for outcome in RECORD_OUTCOMES:
            self._child(self.outcomes, topology, outcome)
        self._child(self.checkpoints, topology)
        if self.started is not None:
            self._child(self.started, topology).set(process_start_time())

    def _child(self, metric, *labels: str):
        """Labelled children are looked up once: ``labels()`` costs a lock and a dict per call."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record(self, s: BatchSample) -> None:
        t = s.topology
        if not s.release:  # a release between batches is not a batch
            self._child(self.batches, t, s.status).inc()
            self._child(self.batch_seconds, t).observe(s.seconds)
        if s.checkpointed:
            self._child(self.checkpoints, t).inc()
        shard = s.shard or self._beat_shard
        if s.checkpointed:
            self._child(self.last_checkpoint, t, shard).set(s.ended)
        checkpoint_retries = s.checkpoint_retries - self._live.pop((t, ""), 0)
        if checkpoint_retries > 0:
            self._child(self.checkpoint_retries, t).inc(checkpoint_retries)
        for outcome, n in s.outcomes.items():
            if n:
                self._child(self.outcomes, t, outcome).inc(n)
        for c in s.components:
            for outcome, n in c.outcome_counts():
                if n:
                    self._child(self.records, t, c.id, outcome).inc(n)
            retries = c.retries - self._live.pop((t, c.id), 0)
            if retries > 0:
                self._child(self.retries, t, c.id).inc(retries)
            if c.received or c.seconds:
                self._child(self.component_seconds, t, c.id).observe(c.seconds)
            if c.written:
                self._child(self.sink_rows, t, c.id, "written").inc(c.written)
            if c.present:
                self._child(self.sink_rows, t, c.id, "present").inc(c.present)
            if c.cache_hits:
                self._child(self.cache, t, c.id, "hit").inc(c.cache_hits)
            if c.cache_misses:
                self._child(self.cache, t, c.id, "miss").inc(c.cache_misses)
        self.record_lag(t, s.millis_behind)
        if s.iterator_age_ms:  # one series per topology: a source's shards may be unbounded (SQS)
            age_ms = max(s.iterator_age_ms.values())
            self._child(self.iterator_age, t).set(age_ms / 1000)
            self._child(self.iterator_age_ms, t).set(age_ms)
        self._child(self.rss, t).set(s.rss_bytes)
        if s.status == "failed" and not s.release:  # the runner tries it again (the KCL)
            self._retrying.setdefault((t, shard), s.ended)
        else:
            self._retrying.pop((t, shard), None)
        self._child(self.retrying_since, t, shard).set(self._retrying.get((t, shard), 0.0))
        self.record_idle(t, s.shard, s.ended)

    def record_retry(
        self,
        topology: str,
        shard: str | None,
        component: str,
        kind: str,
        when: float,
        reason: str = "TransientError",
    ) -> None:
        """A retry the engine decided inside a batch: counted now (the batch's sample later
        counts only the retries not counted here), and the batch retrying since its first."""
        if kind == "checkpoint":
            self._child(self.checkpoint_retries, topology).inc()
            key = (topology, "")
        else:
            self._child(self.retries, topology, component).inc()
            key = (topology, component)
        self._live[key] = self._live.get(key, 0) + 1
        self._child(self.retry_reasons, topology, component, reason).inc()
        shard = shard or self._beat_shard
        if (topology, shard) not in self._retrying:
            self._retrying[(topology, shard)] = when
            self._child(self.retrying_since, topology, shard).set(when)

    def record_settled(self, topology: str, shard: str | None) -> None:
        """Engine work outside a batch (a release) retried and then succeeded: not retrying now."""
        shard = shard or self._beat_shard
        if self._retrying.pop((topology, shard), None) is not None:
            self._child(self.retrying_since, topology, shard).set(0.0)

    def record_checkpoint(self, topology: str) -> None:
        """A batch's checkpoint the runner stored after the batch (the KCL daemon's answer)."""
        self._child(self.checkpoints, topology).inc()
        self._child(self.last_checkpoint, topology, self._beat_shard).set(time.time())

    def record_idle(self, topology: str, shard: str | None, when: float) -> None:
        """No batch, but the runner is alive (a poll found no record; a run or shard starts).
        A sample that names no shard is of the process's last one: under the KCL a series with
        no shard would be no process's, and age for ever."""
        self._beat_shard = shard = shard or self._beat_shard
        self._child(self.heartbeat, topology, shard).set(when)

    def record_lag(self, topology: str, millis_behind: dict[str, int]) -> None:
        """``millis_behind`` is every shard being read (the runner's spout's ``lag()``): the series
        of a shard no longer in it (read to its end: the parent of a split or merge) goes. Its last
        value — a surge's backlog — would otherwise hold ``max()`` up, and ``SquallLagHigh`` and
        ``SquallStalled`` with it, for as long as the process runs (and one series per shard
        ever read)."""
        if not millis_behind:  # nothing known (no poll answered yet): keep what is there
            return
        known = self._shards.setdefault(topology, set())
        for shard in known - millis_behind.keys():
            if self.multiprocess:  # no removal there (one shard per KCL process: not reached)
                self._child(self.millis_behind, topology, shard).set(0)
                continue
            self._children.pop((id(self.millis_behind), (topology, shard)), None)
            self.millis_behind.remove(topology, shard)
            known.discard(shard)
        for shard, ms in millis_behind.items():
            self._child(self.millis_behind, topology, shard).set(ms)
            known.add(shard)


def serve(port: int, registry: CollectorRegistry, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` from a daemon thread of this process (the local runner)."""
    from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR):
        try:
            registry.register(collector)
        except ValueError:  # already there
            pass
    _listen(port, addr, registry)


def _listen(port: int, addr: str, registry: CollectorRegistry) -> None:
    """Start the scrape server; a port that is taken is one clear ``MetricsServerError``."""
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:  # the port is taken, the address is not this host's
        raise MetricsServerError(
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}"
        ) from None


#: A live gauge's file: its writer's PID and, when known, its start time (``process_identifier``).
_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_((\d+)(?:-(\d+))?)\.db$")


class _LiveOnly(MultiProcessCollector):
    """The multiprocess collector, after dropping the live gauges of processes that have exited
    (a PID that now names a process started at another time is an exited writer's)."""

    def collect(self):
        writers = {m.groups() for f in os.listdir(self._path) if (m := _LIVE_FILE.match(f))}
        for identifier, pid, token in writers:
            if not _alive(int(pid)) or (token and start_token(pid) not in (None, token)):
                mark_process_dead(identifier, self._path)
        return super().collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Started:
    """``squall_start_time_seconds`` of the host: the start of ``squall kcl`` (the server's
    parent), which systemd restarts; not a value of the shard processes' files."""

    def __init__(self, topology: str, pid: int | None):
        self.topology, self.at = topology, process_start_time(pid or "self")

    def collect(self):
        spec = SPECS["started"]
        family = GaugeMetricFamily(spec.prometheus, spec.help, labels=spec.labels)
        family.add_metric([self.topology], self.at)
        yield family


def serve_multiprocess(
    directory: Path,
    port: int,
    *,
    parent: int | None = None,
    addr: str = "0.0.0.0",
    topology: str | None = None,
) -> None:
    """Serve the sum of all processes' metrics in ``directory``; return when ``parent`` exits.
    ``topology``: also the start time of ``parent`` (the host's ``squall kcl``).

    Says ``listening`` on stdout once it is (``start_multiprocess_server`` waits for it), or
    why it cannot, and exits 2."""
    registry = CollectorRegistry()
    _LiveOnly(registry, path=str(directory))
    if topology is not None:
        registry.register(_Started(topology, parent))
    try:
        _listen(port, addr, registry)
    except MetricsServerError as exc:
        print(exc, flush=True)
        raise SystemExit(2) from None
    print(READY, flush=True)
    while parent is None or _alive(parent):
        time.sleep(1.0)


def prepare_multiprocess_dir(directory: Path) -> None:
    """An empty directory for the metric files (prometheus-client requires a clean one per run)."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("*.db"):
        f.unlink()


def start_multiprocess_server(metrics_port: str, directory: Path, topology: str) -> None:
    """Before the KCL daemon starts: clean the metrics directory, export it, start the server
    process and wait until it listens; ``MetricsServerError`` when it cannot (a port in use).

    The server exits when this process (which waits for the daemon) exits.
    """
    import subprocess
    import sys

    from squall.observability.runners import parse_metrics_port

    addr, port = parse_metrics_port(metrics_port)
    prepare_multiprocess_dir(directory)
    os.environ[MULTIPROC_ENV] = str(directory.resolve())
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "squall.observability.prometheus",
            "--dir",
            str(directory.resolve()),
            "--port",
            str(port),
            "--addr",
            addr,
            "--parent",
            str(os.getpid()),
            "--topology",
            topology,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=False,
    )
    assert server.stdout is not None
    with server.stdout:
        said = server.stdout.readline().decode(errors="replace").strip()
    if said != READY:
        server.wait()
        raise MetricsServerError(
            said or f"the metrics server on {addr}:{port} exited ({server.returncode})"
        )


def main(argv: list[str] | None = None) -> None:
    """``python -m squall.observability.prometheus --dir D --port P [--parent PID]``."""
    p = argparse.ArgumentParser(
        description="Serve the metrics of all squall processes of this host"
    )
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--addr", default="0.0.0.0")
    p.add_argument("--parent", type=int, help="exit when this process exits (the KCL daemon)")
    p.add_argument("--topology", help="export the parent's start time with this topology label")
    a = p.parse_args(argv)
    serve_multiprocess(a.dir, a.port, parent=a.parent, addr=a.addr, topology=a.topology)


if __name__ == "__main__":
    main()
