"""`squall produce`: JSON lines (optionally gzip) into kinesis-mock, with a report and exit code."""

from __future__ import annotations

import gzip
from types import SimpleNamespace

import orjson
from click.testing import CliRunner

from squall.aws import client as aws_client
from squall.deploy.produce import produce, produce_file
from squall.topology.checkpoint import MemoryCheckpointStore
from tests.kinesis.kinesis_helpers import Faults, assert_key_order, consume, make_spout, payloads


def write_lines(path, docs, *, gz=False, extra: list[bytes] = ()):
    body = b"".join(orjson.dumps(d) + b"\n" for d in docs) + b"".join(extra)
    if gz:
        path.write_bytes(gzip.compress(body))
    else:
        path.write_bytes(body)
    return path


def kinesis_client(endpoint):
    return aws_client("kinesis", region="us-east-1", endpoint_url=endpoint)


def read_back(endpoint, stream):
    return consume(make_spout(endpoint, stream, store=MemoryCheckpointStore()), max_records=1000)


def test_cli_sends_a_gzip_file_with_partition_keys(kinesis_mock, make_stream, tmp_path):
    stream = make_stream(2)
    docs = [{"user": {"id": f"u{i % 5}"}, "n": i} for i in range(700)]
    path = write_lines(tmp_path / "events.jsonl.gz", docs, gz=True, extra=[b"\n", b"   \n"])
    result = CliRunner().invoke(
        produce,
        [
            "--stream",
            stream,
            "--endpoint-url",
            kinesis_mock.endpoint,
            "--partition-key",
            "user.id",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "sent 700 records" in result.output and "failed 0" in result.output
    seen = read_back(kinesis_mock.endpoint, stream)
    assert sorted(d["n"] for d in payloads(seen)) == list(range(700))
    assert {r.meta.partition_key for r in seen} == {f"u{i}" for i in range(5)}
    assert_key_order([{"pk": d["user"]["id"], "n": d["n"]} for d in payloads(seen)])


def test_aggregated_produce_packs_records_per_shard(kinesis, kinesis_mock, make_stream, tmp_path):
    stream = make_stream(3)
    docs = [{"pk": f"k{i % 13}", "n": i, "pad": "x" * 80} for i in range(2000)]
    path = write_lines(tmp_path / "events.jsonl", docs)
    report = produce_file(
        path, stream=stream, endpoint_url=kinesis_mock.endpoint, aggregate=True, partition_key="pk"
    )
    assert (report.sent, report.failed, report.lines) == (2000, 0, 2000)
    assert report.kinesis_records < 100
    seen = read_back(kinesis_mock.endpoint, stream)
    got = payloads(seen)
    assert sorted(d["n"] for d in got) == list(range(2000))
    assert_key_order(got)
    assert {r.meta.partition_key for r in seen} == {f"k{i}" for i in range(13)}


def test_lines_without_the_key_are_still_sent(kinesis_mock, make_stream, tmp_path):
    stream = make_stream(1)
    path = write_lines(
        tmp_path / "mixed.jsonl",
        [{"pk": "a", "n": 1}, {"n": 2}],
        extra=[b"not json\n", orjson.dumps({"pk": "b", "n": 3}) + b"\n"],
    )
    result = CliRunner().invoke(
        produce,
        [
            "--stream",
            stream,
            "--endpoint-url",
            kinesis_mock.endpoint,
            "--partition-key",
            "pk",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "sent 4 records" in result.output
    # The lines are named: "2 line(s) had no 'pk'" alone left the user to search the file.
    assert "2 line(s) had no 'pk' (or were not JSON): keyed by line number (lines 2, 3)" in (
        " ".join(result.output.split())
    )
    seen = read_back(kinesis_mock.endpoint, stream)
    assert [r.meta.partition_key for r in seen] == ["a", "2", "3", "b"]
    assert seen[2].data == b"not json"


def test_the_report_names_the_first_lines_without_the_partition_key():
    from squall.deploy.produce import ProduceReport, unkeyed_lines

    report = ProduceReport(unkeyed=1, unkeyed_lines=[7])
    assert unkeyed_lines(report) == "line 7"
    report = ProduceReport(unkeyed=7, unkeyed_lines=[1, 3, 5, 7, 9])
    assert unkeyed_lines(report) == "first lines 1, 3, 5, 7, 9"


def test_records_kinesis_refuses_fail_and_the_exit_code_says_so(
    kinesis_mock, make_stream, tmp_path
):
    stream = make_stream(1)
    path = write_lines(
        tmp_path / "big.jsonl", [{"n": 1}, {"n": 2, "blob": "x" * (1024 * 1024)}, {"n": 3}]
    )
    result = CliRunner().invoke(
        produce, ["--stream", stream, "--endpoint-url", kinesis_mock.endpoint, str(path)]
    )
    assert result.exit_code == 1
    assert "sent 2 records" in result.output and "failed 1" in result.output
    assert "line 2: record is" in result.output
    assert sorted(d["n"] for d in payloads(read_back(kinesis_mock.endpoint, stream))) == [1, 3]


def test_partial_put_failures_are_retried_and_counted(kinesis, kinesis_mock, make_stream, tmp_path):
    stream = make_stream(1)
    path = write_lines(tmp_path / "e.jsonl", [{"n": i} for i in range(20)])
    client = kinesis_client(kinesis_mock.endpoint)

    Faults(SimpleNamespace(client=client), kinesis, {0: {3, 4}, 1: {0}, 2: {0}, 3: {0}, 4: {0}})
    report = produce_file(path, stream=stream, client=client, sleep=lambda s: None)
    assert (report.sent, report.failed) == (19, 1)
    assert report.retried == 2 + 1 + 1 + 1
    assert "ProvisionedThroughputExceededException" in report.failures[0]


def test_rate_paces_records(kinesis_mock, make_stream, tmp_path):
    stream = make_stream(1)
    path = write_lines(tmp_path / "e.jsonl", [{"n": i} for i in range(50)])
    now = [0.0]  # a fake clock that moves only when produce sleeps

    def sleep(seconds):
        now[0] += seconds

    report = produce_file(
        path,
        stream=stream,
        endpoint_url=kinesis_mock.endpoint,
        rate=100,
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert report.sent == 50
    assert abs(now[0] - 0.49) < 1e-6  # 50 records at 100/s: the last one leaves at t = 0.49 s
    assert len(read_back(kinesis_mock.endpoint, stream)) == 50


def test_missing_stream_exits_non_zero(kinesis_mock, tmp_path):
    path = write_lines(tmp_path / "e.jsonl", [{"n": 1}])
    result = CliRunner().invoke(
        produce, ["--stream", "no-such-stream", "--endpoint-url", kinesis_mock.endpoint, str(path)]
    )
    assert result.exit_code == 2
    assert "no-such-stream" in result.output


def test_default_partition_key_is_the_line_number(kinesis_mock, make_stream, tmp_path):
    stream = make_stream(1)
    path = write_lines(tmp_path / "e.jsonl", [{"n": i} for i in range(3)])
    assert produce_file(path, stream=stream, endpoint_url=kinesis_mock.endpoint).sent == 3
    assert [r.meta.partition_key for r in read_back(kinesis_mock.endpoint, stream)] == [
        "1",
        "2",
        "3",
    ]


def test_a_bom_opening_the_file_is_not_sent(kinesis_mock, make_stream, tmp_path):
    # An Excel export: the file spout drops the BOM; produce sent it with the first line, which a
    # JSON decoder refuses (and --partition-key found no key in it).
    stream = make_stream(1)
    path = tmp_path / "excel.jsonl.gz"
    path.write_bytes(gzip.compress(b'\xef\xbb\xbf{"pk": "a"}\r\n{"pk": "b"}\r\n'))
    result = CliRunner().invoke(
        produce,
        ["--stream", stream, "--endpoint-url", kinesis_mock.endpoint, "--partition-key", "pk"]
        + [str(path)],
    )
    assert result.exit_code == 0, result.output
    assert "sent 2 records" in result.output and "had no 'pk'" not in result.output
    seen = read_back(kinesis_mock.endpoint, stream)
    assert [(r.meta.partition_key, r.data) for r in seen] == [
        ("a", b'{"pk": "a"}'),
        ("b", b'{"pk": "b"}'),
    ]
