"""Throughput of the acting sinks against their local stand-ins, in one run.

    python benchmarks/bench_sinks.py [--events 5000] [--runs 3]

sqs, s3 (gzip JSON lines and Parquet; one object set per batch, and rolled across batches with
``roll_bytes``, released when due as the engine does) and firehose write to moto's standalone server on loopback
(started here, stopped at the end); http and push post to a local threading HTTP server (push
also fetches its OAuth2 token there, once). Each figure is the median of ``--runs`` runs of
prepare + write_batch over the events in batches of 500, in events per second, on this machine.
The stand-ins are the bottleneck for most rows (moto parses every call in Python): the figures
compare squall's sinks on one machine, they do not predict AWS or FCM throughput. The push rows
show the configured rate limit holding (200/s after a one-second burst) and the unlimited rate at concurrency 8.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from squall.component import ComponentContext  # noqa: E402
from squall.event import Event, RecordMeta  # noqa: E402
from squall.sinks.firehose import FirehoseSink, FirehoseSinkConfig  # noqa: E402
from squall.sinks.http import HttpSink, HttpSinkConfig  # noqa: E402
from squall.sinks.push import PushSink, PushSinkConfig  # noqa: E402
from squall.sinks.s3 import S3Sink, S3SinkConfig  # noqa: E402
from squall.sinks.sqs import SqsSink, SqsSinkConfig  # noqa: E402
from tests.moto_standin import DUMMY_ENV, MotoServer  # noqa: E402
from tests.sinks.local_http import LocalHttp  # noqa: E402

CTX = ComponentContext("bench")
BATCH = 500


class InstantSqs:
    """An SQS client that takes every message at once: what the sink itself costs per event."""

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's names
        return {"Successful": [{"Id": e["Id"], "MessageId": "m"} for e in Entries]}

    def close(self) -> None:
        pass


def make_events(n: int) -> list[Event]:
    out = []
    for i in range(n):
        value = {
            "event_type": "click",
            "user_id": f"u{i % 977}",
            "device_token": f"tok-{i}",
            "timestamp": f"2026-11-03T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",
            "campaign": {"id": "c-1", "title": "Sale", "body": "50% off today"},
            "n": i,
        }
        raw = orjson.dumps(value)
        out.append(
            Event(raw, RecordMeta("bench", "shardId-000000000000", str(1000 + i)), None, i, value)
        )
    return out


def run_sink(sink: Any, events: list[Event]) -> float:
    """Seconds to prepare and write the events in batches; fails loudly if anything was not written."""
    started = time.perf_counter()
    rolling = getattr(sink, "rolling", False)
    for i in range(0, len(events), BATCH):
        prepared = sink.prepare(events[i : i + BATCH])
        assert not prepared.rejected, prepared.rejected[0].failure
        result = sink.write_batch(prepared, None)
        assert result is None or not (result.failed or getattr(result, "dead_tokens", None)), result
        if rolling and sink.holding() and sink.due():  # what the engine does after each batch
            sink.release()
    if rolling and sink.holding():  # end of input
        sink.release()
    return time.perf_counter() - started


def median_rate(
    make_sink: Any, events: list[Event], runs: int, objects: list | None = None
) -> float:
    """Median events/s over ``runs`` fresh sinks; ``objects`` gets each run's S3 puts."""
    rates = []
    for _ in range(runs):
        sink = make_sink()
        sink.open()
        try:
            rates.append(len(events) / run_sink(sink, events))
            if objects is not None:
                objects.append(sink.puts)
        finally:
            sink.close()
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import os

    os.environ.update(DUMMY_ENV)
    events = make_events(args.events)
    rows: list[tuple[str, int, float]] = []
    s3_objects: dict[str, float] = {}  # objects written per run, for the s3 rows
    with tempfile.TemporaryDirectory() as tmp:
        moto = MotoServer(Path(tmp))
        try:
            moto.wait_ready()
            ep = moto.endpoint
            sqs, s3, fh = moto.client("sqs"), moto.client("s3"), moto.client("firehose")
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)

            def sqs_sink() -> SqsSink:
                url = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")["QueueUrl"]
                return SqsSink(SqsSinkConfig(id="sqs", type="sqs", queue=url, endpoint_url=ep), CTX)

            # moto's SQS gets slower as a queue fills (~0.1 s per call of 10 at first): few events, and
            # the sink's own cost measured with a client that answers at once.
            n_small = min(len(events), 500)
            rows.append(
                (
                    "sqs (standard, 10/call)",
                    n_small,
                    median_rate(sqs_sink, events[:n_small], args.runs),
                )
            )

            def instant_sqs() -> SqsSink:
                sink = SqsSink(
                    SqsSinkConfig(id="sqs", type="sqs", queue="http://127.0.0.1:1/q"), CTX
                )
                sink.client = InstantSqs()
                return sink

            rows.append(
                (
                    "sqs sink alone (client answering at once)",
                    len(events),
                    median_rate(instant_sqs, events, args.runs),
                )
            )
            cols = {
                "event_id": "meta.event_id",
                "user_id": "user_id",
                "n": {"path": "n", "type": "int64"},
                "at": {"path": "timestamp", "type": "timestamp"},
            }
            parquet = {"format": "parquet", "compression": "snappy", "columns": cols}
            # per-batch objects and rolled ones, interleaved run by run so both see the same load
            variants = [
                ("s3 jsonl.gz, per batch (per hour partition)", {}),
                ("s3 jsonl.gz, rolled at 1 MiB", {"roll_bytes": 1 << 20}),
                ("s3 jsonl.gz, rolled at 64 MiB (end of input)", {"roll_bytes": 64 << 20}),
                ("s3 parquet (4 columns), per batch", parquet),
                ("s3 parquet (4 columns), rolled at 64 MiB", {**parquet, "roll_bytes": 64 << 20}),
            ]
            found: dict[str, tuple[list[float], list[int]]] = {n: ([], []) for n, _ in variants}
            for _ in range(args.runs):
                for name, extra in variants:

                    def s3_sink(extra: dict = extra) -> S3Sink:
                        return S3Sink(
                            S3SinkConfig(
                                id="s3",
                                type="s3",
                                bucket=bucket,
                                endpoint_url=ep,
                                time_field="timestamp",
                                **extra,
                            ),
                            CTX,
                        )

                    rates, puts = found[name]
                    rates.append(median_rate(s3_sink, events, 1, puts))
            for name, (rates, puts) in found.items():
                rows.append((name, len(events), statistics.median(rates)))
                s3_objects[name] = statistics.median(puts)
            stream = f"bench-{uuid.uuid4().hex[:8]}"
            fh.create_delivery_stream(
                DeliveryStreamName=stream,
                ExtendedS3DestinationConfiguration={
                    "RoleARN": "arn:aws:iam::123456789012:role/fh",
                    "BucketARN": f"arn:aws:s3:::{bucket}",
                    "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 900},
                },
            )
            rows.append(
                (
                    "firehose (500/call)",
                    len(events),
                    median_rate(
                        lambda: FirehoseSink(
                            FirehoseSinkConfig(
                                id="fh", type="firehose", delivery_stream=stream, endpoint_url=ep
                            ),
                            CTX,
                        ),
                        events,
                        args.runs,
                    ),
                )
            )
        finally:
            moto.stop()

    with LocalHttp(lambda req: (200, {}, "")) as srv:
        n_http = min(len(events), 2000)
        rows.append(
            (
                "http single, concurrency 8",
                n_http,
                median_rate(
                    lambda: HttpSink(
                        HttpSinkConfig(id="h", type="http", url=srv.url, concurrency=8), CTX
                    ),
                    events[:n_http],
                    args.runs,
                ),
            )
        )
        rows.append(
            (
                "http ndjson_batch of 100",
                len(events),
                median_rate(
                    lambda: HttpSink(
                        HttpSinkConfig(id="h", type="http", url=srv.url, mode="ndjson_batch"), CTX
                    ),
                    events,
                    args.runs,
                ),
            )
        )

    push_rows = push_bench(events, args.runs)
    rows.extend(push_rows)

    print(
        f"# bench_sinks — {platform.python_implementation()} {platform.python_version()}, "
        f"{args.events} events, median of {args.runs}\n"
    )
    print("| sink against its stand-in | events | events/s |")
    print("|---|---|---|")
    for name, n, rate in rows:
        print(f"| {name} | {n} | {rate:,.0f} |")
    base = next(r for n, _, r in rows if n.startswith("s3 jsonl.gz, per batch"))
    print("\n| s3 variant (same run) | objects written | events/s | vs per batch |")
    print("|---|---|---|---|")
    for name, _n, rate in rows:
        if name in s3_objects:
            print(f"| {name} | {s3_objects[name]:.0f} | {rate:,.0f} | {rate / base:.2f}× |")


def push_bench(events: list[Event], runs: int) -> list[tuple[str, int, float]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    def answer(req):
        if req.path == "/token":
            return (
                200,
                {},
                json.dumps({"access_token": "at", "expires_in": 3600, "token_type": "Bearer"}),
            )
        return 200, {}, '{"name": "projects/bench/messages/1"}'

    out = []
    with LocalHttp(answer) as srv:
        sa = json.dumps(
            {
                "type": "service_account",
                "client_email": "b@bench.iam.gserviceaccount.com",
                "private_key": pem,
                "token_uri": f"{srv.url}/token",
                "project_id": "bench",
            }
        )

        def sink(rate: float | None) -> PushSink:
            return PushSink(
                PushSinkConfig(
                    id="push",
                    type="push",
                    project_id="bench",
                    credentials=sa,
                    endpoint=srv.url,
                    title="{campaign.title}",
                    body="{campaign.body}",
                    rate_limit=rate,
                    concurrency=8,
                ),
                CTX,
            )

        n = min(len(events), 1000)
        # A full bucket (one second's worth, 200) goes at once, the other 800 at 200/s: 1000 in ~4 s = ~250/s.
        out.append(
            (
                "push, rate_limit 200/s (burst 200; expect ~250/s)",
                n,
                median_rate(lambda: sink(200), events[:n], runs),
            )
        )
        out.append(
            (
                "push, no rate limit, concurrency 8",
                n,
                median_rate(lambda: sink(None), events[:n], runs),
            )
        )
    return out


if __name__ == "__main__":
    main()
