"""The S3 reads of an S3- or SQS-triggered Lambda are bounded by the invocation's time left, as
the sinks' AWS calls are (``aws.time_bounded``): against moto's standalone server and a stalled
local TCP server. A GetObject makes one attempt (botocore's retries do not know the deadline) and
is retried as the engine retries a sink's transient error while the backoff fits; none is sent,
and no read of a body started, with no time left; each read waits no longer than the time left.
No sleeping: the time left is set by the test, botocore's backoff is recorded, not slept."""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import types
from collections.abc import Iterator

import botocore.endpoint
import pytest

from squall import aws
from squall.deploy.lambda_sources import handle_s3, handle_s3_messages
from squall.spouts.s3 import ObjectReadError, ReadBound, object_batches, open_object
from squall.testing import MemorySink, topology_from
from squall.topology.executor import Engine
from tests.deploy.test_s3_envelopes import eventbridge_event
from tests.deploy.test_sqs_s3_sources import put_lines, sqs_lambda_event
from tests.moto_standin import throttle_first, unique


@pytest.fixture
def botocore_sleeps(monkeypatch) -> list[float]:
    """botocore's retry backoff recorded, not slept."""
    slept: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=slept.append))
    return slept


@pytest.fixture
def landing(moto_server):
    """A bucket with two one-line objects, and an S3 client of ``aws.client`` on moto's server."""
    s3 = moto_server.client("s3")
    bucket = unique("bound")
    s3.create_bucket(Bucket=bucket)
    for i in range(2):
        put_lines(s3, bucket, f"in/{i}.jsonl", [{"n": i}], gz=False)
    return bucket, aws.client("s3", region=None, endpoint_url=moto_server.endpoint)


def _engine(store: str, time_left: float | None) -> Engine:
    engine = Engine(
        topology_from(
            f"""
name: t
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {store}}}
settings: {{retry: {{attempts: 3, initial_backoff: 0}}}}
"""
        ).plan
    )
    engine.time_left = lambda: time_left
    return engine.open()


def test_a_throttled_get_object_is_one_attempt_retried_by_squall_while_time_is_left(
    landing, botocore_sleeps
):
    """In a Lambda botocore does not retry the throttled GetObject itself (its backoff is blind
    to the deadline): squall's retry, time-aware, reads the object."""
    bucket, client = landing
    store = unique("read")
    attempts = throttle_first(client, 2)
    got = handle_s3(
        _engine(store, 10.0), eventbridge_event(bucket, "in/0.jsonl"), client, batch_size=10
    )
    assert got["records"] == 1 and len(attempts) == 3 and botocore_sleeps == []
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [0]


def test_outside_a_lambda_botocore_still_retries_the_get_object(landing, botocore_sleeps):
    """No deadline (a time left of None): botocore retries as configured, as for the sinks."""
    bucket, client = landing
    store = unique("read")
    attempts = throttle_first(client, 1)
    got = handle_s3(
        _engine(store, None), eventbridge_event(bucket, "in/0.jsonl"), client, batch_size=10
    )
    assert got["records"] == 1 and len(attempts) == 2 and len(botocore_sleeps) == 1


def test_a_get_object_whose_backoff_does_not_fit_is_not_retried(landing, botocore_sleeps):
    bucket, client = landing
    attempts = throttle_first(client, 5)
    slept: list[float] = []
    bound = ReadBound(lambda: 0.5, initial_backoff=1.0, rng=lambda: 1.0, sleep=slept.append)
    with pytest.raises(ObjectReadError, match="not retried: the time left") as caught:
        open_object(client, bucket, "in/0.jsonl", bound=bound)
    assert caught.value.transient and len(attempts) == 1 and slept == [] and botocore_sleeps == []


@pytest.mark.parametrize("left", [0.0, -0.5])
def test_no_get_object_is_sent_and_no_body_read_started_with_no_time_left(landing, left):
    bucket, client = landing
    attempts = throttle_first(client, 0)  # records every attempt, answers none
    with pytest.raises(ObjectReadError, match=f"{aws.NOT_SENT}$") as caught:
        open_object(client, bucket, "in/0.jsonl", bound=ReadBound(lambda: left))
    assert caught.value.transient and attempts == []
    time_left = [10.0]
    obj = open_object(client, bucket, "in/0.jsonl", bound=ReadBound(lambda: time_left[0]))
    time_left[0] = left  # spent between the GetObject and the first read of its body
    with pytest.raises(ObjectReadError, match="reading stopped after 0 bytes: the time left"):
        list(object_batches(obj, 10))


def test_a_transient_read_failure_names_the_rest_of_the_sqs_batch_unread(landing, botocore_sleeps):
    """As after a sink's dependency stayed down (``BatchFailed``): the messages after it are
    named without being read, each would wait through its own retries."""
    bucket, client = landing
    attempts = throttle_first(client, 100)
    event = sqs_lambda_event(
        [(f"m-{i}", eventbridge_event(bucket, f"in/{i}.jsonl"), None) for i in range(2)]
    )
    got = handle_s3_messages(_engine(unique("read"), 10.0), event, client, batch_size=10)
    assert got == {"batchItemFailures": [{"itemIdentifier": "m-0"}, {"itemIdentifier": "m-1"}]}
    assert len(attempts) == 3 and botocore_sleeps == []  # settings.retry.attempts, one message


class _Stalling:
    """A local HTTP server whose every answer stops: after its headers and ``sent`` body bytes
    (of ``length``), or before anything (``sent`` None). Connections stay open until the end.
    ``close``: its answers say ``Connection: close`` (as moto's do, and S3's at times)."""

    def __init__(self, sent: int | None, length: int = 100, close: bool = False):
        self.sent, self.length, self.close_header = sent, length, close
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            if self.sent is not None:
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Length: {self.length}\r\n"
                    'ETag: "e"\r\nContent-Type: application/x-ndjson\r\n'
                    + ("Connection: close\r\n" if self.close_header else "")
                    + "\r\n"
                ).encode()
                conn.sendall(head + b'{"n": 1}\n'[: self.sent])

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


class _CutFirst(_Stalling):
    """A local HTTP server whose first answer is cut: its headers and 5 of its body's bytes,
    then the connection reset (``Connection reset by peer``, as S3's are at times); the later
    answers whole (one line ``{"n": 1}``)."""

    def __init__(self):
        self.answered = 0  # before the serving thread starts
        super().__init__(None)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            body = b'{"n": 1}\n'
            length = 100 if self.answered == 0 else len(body)
            conn.sendall(
                f'HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nETag: "e"\r\n'
                "Connection: close\r\n\r\n".encode()
                + body[: 5 if self.answered == 0 else None]
            )
            if self.answered == 0:  # a reset (RST), not an orderly close
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.answered += 1
            conn.close()


@pytest.fixture
def stalling() -> Iterator[type[_Stalling]]:
    made: list[_Stalling] = []

    def make(sent: int | None, close: bool = False) -> _Stalling:
        made.append(_Stalling(sent, close=close))
        return made[-1]

    yield make  # type: ignore[misc]
    for server in made:
        server.close()


def test_a_stalled_get_object_waits_no_longer_than_the_time_left(stalling, aws_env):  # noqa: F811
    """Not the client's 30 s: the GetObject's answer is read no longer than the time left."""
    server = stalling(None)
    client = aws.client("s3", region=None, endpoint_url=server.url)
    seen: list[object] = []
    client.meta.events.register(
        "before-send", lambda request, **_: seen.append(request.context.get("read_timeout"))
    )
    with pytest.raises(ObjectReadError, match="Read timeout on endpoint") as caught:
        open_object(client, "b", "k.jsonl", bound=ReadBound(lambda: 0.3, attempts=1))
    assert caught.value.transient and seen == [0.3]


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
def test_a_stalled_body_read_waits_no_longer_than_the_time_left_now(stalling, aws_env, close):  # noqa: F811
    """The body is read over many slices, long after its GetObject: each read waits no longer
    than the time left when it starts, not what was left at the GetObject. Also when the answer
    says ``Connection: close``: http.client then hands the socket from the connection to the
    response (the connection's ``sock`` is None) and the body is read from it all the same."""
    server = stalling(5, close)
    client = aws.client("s3", region=None, endpoint_url=server.url)
    time_left = [5.0]
    obj = open_object(client, "b", "k.jsonl", bound=ReadBound(lambda: time_left[0]))
    time_left[0] = 0.2
    with pytest.raises(ObjectReadError, match=r"after 0 bytes: .*time left: 0\.20s\)") as caught:
        list(object_batches(obj, 10))
    assert caught.value.transient


def test_a_gzip_objects_first_pass_stops_decompressing_once_the_time_left_is_spent(
    landing, monkeypatch
):
    """The first pass decompresses a gzip object to its end between reads of its body: a
    megabyte read can inflate to a gigabyte (seconds of CPU). It stops at the first step
    (``CHUNK`` bytes decompressed) after the time left is spent, not at the next read."""
    from squall.spouts import s3 as s3_spout

    bucket, client = landing
    client.put_object(Bucket=bucket, Key="in/z.jsonl.gz", Body=gzip.compress(b"\n" * 2**25))
    reads: list[int] = []
    readinto = s3_spout._Body.readinto

    def counted(self, buffer):  # the body's reads: all of it (~33 KiB compressed) in the first
        reads.append(readinto(self, buffer))
        return reads[-1]

    monkeypatch.setattr(s3_spout._Body, "readinto", counted)
    spent_once_read = ReadBound(lambda: 0.0 if reads else 10.0)
    obj = open_object(client, bucket, "in/z.jsonl.gz", bound=spent_once_read)
    with pytest.raises(ObjectReadError, match=r", 1048576 decompressed: the time left") as caught:
        list(object_batches(obj, 10))
    assert caught.value.transient and len(reads) == 1


def test_a_body_read_cut_once_with_time_left_fails_its_message_only(aws_env):  # noqa: F811
    """A body read is not retried (a GetObject is): one cut with time left is not S3 down — its
    message is named, the later ones are still read (naming them unread would send them back
    after the visibility timeout, a receive counted against maxReceiveCount, for nothing)."""
    server = _CutFirst()
    try:
        client = aws.client("s3", region=None, endpoint_url=server.url)
        store = unique("read")
        event = sqs_lambda_event(
            [(f"m-{i}", eventbridge_event("b", f"in/{i}.jsonl"), None) for i in range(2)]
        )
        got = handle_s3_messages(_engine(store, 10.0), event, client, batch_size=10)
    finally:
        server.close()
    assert got == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1]


@pytest.mark.parametrize("kept", [True, False], ids=["kept-in-memory", "read-again"])
def test_a_gzip_objects_second_pass_stops_decompressing_once_the_time_left_is_spent(
    landing, monkeypatch, kept
):
    """The second pass inflates the object again: an object kept in memory (at most
    ``KEPT_COMPRESSED`` compressed) is not read again, and ~33 KiB read again can be 32 MiB of
    blank lines (skipped: no batch between them) — a gigabyte for a megabyte. It stops at its
    first step (``CHUNK`` decompressed) after the time left is spent, as the first pass does: it
    inflated the whole object with no time check (kept), or until its next read (read again):
    32 MiB of blank lines took 34 s of CPU there. Its steps are ``LINES_STEP`` (64 KiB): each
    byte also goes through the line reader."""
    from squall.spouts import s3 as s3_spout

    bucket, client = landing
    if not kept:
        monkeypatch.setattr(s3_spout, "KEPT_COMPRESSED", 1024)  # a second GET, no 8 MiB object
    client.put_object(Bucket=bucket, Key="in/z.jsonl.gz", Body=gzip.compress(b"\n" * 2**25))
    first_pass_done, second_reads = [], []
    check, readinto = s3_spout._check_gzip, s3_spout._Body.readinto

    def first_pass(*args):
        first_pass_done.append(check(*args))
        return first_pass_done[-1]

    def counted(self, buffer):
        n = readinto(self, buffer)
        if first_pass_done:
            second_reads.append(n)
        return n

    monkeypatch.setattr(s3_spout, "_check_gzip", first_pass)
    monkeypatch.setattr(s3_spout._Body, "readinto", counted)
    # Time left through the first pass; spent once the second has its compressed bytes.
    bound = ReadBound(lambda: 0.0 if first_pass_done and (kept or second_reads) else 10.0)
    obj = open_object(client, bucket, "in/z.jsonl.gz", bound=bound)
    with pytest.raises(
        ObjectReadError, match=f", {s3_spout.LINES_STEP} decompressed in the second pass: the time"
    ) as caught:
        list(object_batches(obj, 10))
    assert caught.value.transient and first_pass_done == [None]
    assert second_reads == ([] if kept else [obj.size])
