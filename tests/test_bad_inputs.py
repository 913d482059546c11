"""The hostile-input corpus (tests/bad_inputs.py) through `squall run` on the pistats example.

Every record is accounted for — rows + dead letters + filtered = input — with exit code 0 and no
traceback; each case is checked on its own against one shared run, so a failure names the case.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from squall import exact_json
from squall.deploy.local import EXIT_OK, LocalRunner
from squall.spouts.file import path_spout_config
from squall.topology.loader import load
from squall.topology.outcomes import Outcome
from tests.bad_inputs import NEEDS_ISOLATION, Case, file_cases, record_cases
from tests.child_env import child_env
from tests.conftest import EXAMPLES

SUMMARY = re.compile(
    r"committed ([\d,]+), dead-lettered ([\d,]+), filtered ([\d,]+), failed ([\d,]+)"
)


@dataclass
class Outcome_:
    returncode: int
    stderr: str
    counts: tuple[int, int, int, int]
    rows: set[str]
    dead: dict[str, list[dict]]  # line number → dead letters


def _copy_example(dst: Path) -> Path:
    shutil.copytree(
        EXAMPLES / "pistats", dst, ignore=shutil.ignore_patterns("out", "events.jsonl.gz")
    )
    return dst


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> Outcome_:
    root = tmp_path_factory.mktemp("bad-inputs")
    example = _copy_example(root / "pistats")
    src = root / "corpus.jsonl"
    src.write_bytes(b"".join(line + b"\n" for case in record_cases() for line in case.lines))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "squall.cli",
            "run",
            "topology.yaml",
            "--input",
            str(src),
            "--batch-size",
            "25",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=example,
        env=child_env(HOME=str(root)),
        timeout=600,
    )
    m = SUMMARY.search(proc.stdout + proc.stderr)
    counts = tuple(int(g.replace(",", "")) for g in m.groups()) if m else (-1, -1, -1, -1)
    db = example / "out" / "pistats.db"
    rows = (
        {r[0] for r in sqlite3.connect(db).execute("select event_id from events")}
        if db.exists()
        else set()
    )
    dead: dict[str, list[dict]] = {}
    rejects = example / "out" / "rejects.jsonl"
    if rejects.exists():
        for line in rejects.read_bytes().splitlines():
            doc = orjson.loads(line)
            dead.setdefault(doc["meta"]["sequence_number"], []).append(doc)
    return Outcome_(proc.returncode, proc.stderr, counts, rows, dead)  # type: ignore[arg-type]


def _line_numbers() -> dict[str, list[int]]:
    numbers, n = {}, 0
    for case in record_cases():
        numbers[case.name] = list(range(n + 1, n + len(case.lines) + 1))
        n += len(case.lines)
    return numbers


def _message_id(line: bytes) -> str | None:
    try:  # as the json bolt reads it: an integer of 400 digits (giant-integer) is a row now
        doc = exact_json.loads(line)
    except ValueError:
        return None
    mid = doc.get("message_id") if isinstance(doc, dict) else None
    return mid if isinstance(mid, str) else None


def test_the_corpus_is_large_and_names_are_unique():
    names = [c.name for c in record_cases()] + list(file_cases())
    assert len(names) >= 60 and len(set(names)) == len(names)


def test_every_record_of_the_corpus_is_accounted_for_with_exit_0(corpus_run: Outcome_):
    total = sum(c.records for c in record_cases())
    committed, dead, filtered, failed = corpus_run.counts
    assert corpus_run.returncode == EXIT_OK, corpus_run.stderr[-3000:]
    assert "Traceback" not in corpus_run.stderr
    assert failed == 0 and committed + dead + filtered == total
    assert len(corpus_run.rows) == committed
    assert sum(len(v) for v in corpus_run.dead.values()) == dead
    for docs in corpus_run.dead.values():
        for doc in docs:
            assert (
                doc["component"] and doc["reason"] and ("record" in doc or "record_base64" in doc)
            )


def _cases() -> list:
    return [
        pytest.param(
            c,
            id=c.name,
            marks=pytest.mark.xfail(strict=True, reason="needs engine isolation")
            if c.name in NEEDS_ISOLATION
            else (),
        )
        for c in record_cases()
    ]


@pytest.mark.parametrize("case", _cases())
def test_each_case_ends_as_a_row_a_dead_letter_or_a_duplicate(corpus_run: Outcome_, case: Case):
    assert corpus_run.returncode == EXIT_OK
    seen_ids: set[str] = set()
    for number, line in zip(_line_numbers()[case.name], case.lines, strict=True):
        if not line.strip():
            continue
        if str(number) in corpus_run.dead:
            reason = corpus_run.dead[str(number)][0]["reason"]
            assert len(reason) < 5000 and "Traceback" not in reason
            continue
        mid = _message_id(line)
        assert mid is not None and mid in corpus_run.rows, (
            f"line {number} of {case.name}: neither row nor dead letter"
        )
        assert mid not in seen_ids or case.name == "duplicate-message-id"
        seen_ids.add(mid)


@pytest.fixture(scope="module")
def example_engine(tmp_path_factory):
    """The pistats example's engine, opened once (geo and device databases load once) for the file cases."""
    from squall.topology.executor import Engine

    example = _copy_example(tmp_path_factory.mktemp("file-cases") / "pistats")
    engine = Engine(load(example / "topology.yaml", env={}).plan).open()
    yield engine
    engine.close()


@pytest.mark.parametrize("name", list(file_cases()))
def test_odd_files_are_read_whole_and_accounted_for(tmp_path: Path, name: str, example_engine):
    from squall.component import ComponentContext
    from squall.spouts.file import FileSpout

    data, records = file_cases()[name]
    src = tmp_path / name
    src.write_bytes(data)
    config = path_spout_config(src, "spout")
    spout = FileSpout(
        config, ComponentContext("pistats", tmp_path)
    )  # what `squall run --input` reads with
    spout.open()
    counts = dict.fromkeys(Outcome, 0)
    try:
        for batch in spout.read(500):
            for outcome, n in example_engine.process(batch).counts().items():
                counts[outcome] += n
    finally:
        spout.close()
    assert (
        counts[Outcome.COMMITTED] + counts[Outcome.DEAD_LETTERED] + counts[Outcome.FILTERED]
        == records
    )
    assert counts[Outcome.FAILED] == 0


def test_a_file_case_through_squall_run(tmp_path: Path):
    """One odd file end to end through the local runner too (the others share one engine above)."""
    data, records = file_cases()["gzip-one-huge-line.jsonl.gz"]
    example = _copy_example(tmp_path / "pistats")
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(data)
    topo = load(example / "topology.yaml", env={})
    report = LocalRunner(topo.with_spout(path_spout_config(src, topo.spout.id))).run()
    assert report.exit_code == EXIT_OK and report.setup_error is None and report.error is None
    assert report.counts[Outcome.COMMITTED] == 1 and report.counts[Outcome.DEAD_LETTERED] == 1


def test_the_corpus_through_the_lambda_consumer_fails_no_invocation(
    tmp_path: Path, corpus_run: Outcome_, monkeypatch
):
    from squall.deploy.lambda_consumer import make_handler
    from tests.factories import kinesis_lambda_event

    example = _copy_example(tmp_path / "pistats")
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("STATE_URL", raising=False)
    handler = make_handler(example / "topology.yaml")
    lines = [line for case in record_cases() for line in case.lines if line.strip()]
    try:
        for start in range(0, len(lines), 25):  # Lambda batches of 25
            event = kinesis_lambda_event(lines[start : start + 25], start=10**20 + start)
            assert handler(event, None) == {"batchItemFailures": []}
    finally:
        handler.engine.close()
    rows = (
        sqlite3.connect(example / "out" / "pistats.db")
        .execute("select count(*) from events")
        .fetchone()[0]
    )
    dead = len((example / "out" / "rejects.jsonl").read_bytes().splitlines())
    committed, dead_run, filtered, _ = corpus_run.counts
    assert (rows, dead) == (committed, dead_run)  # the same fate as through `squall run`
    assert rows + dead + filtered == len(lines)


def test_the_corpus_through_the_producer_is_202_or_400_never_a_crash(tmp_path: Path, monkeypatch):
    from squall.deploy.lambda_producer import make_handler
    from tests.factories import api_gateway_event

    example = _copy_example(tmp_path / "pistats")
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("STATE_URL", raising=False)
    handler = make_handler(example / "topology.yaml", context_key=None)
    answered = {}
    try:
        for case in record_cases():
            body = b"\n".join(case.lines)
            answer = handler(api_gateway_event(body), None)  # bytes: sent base64-encoded
            answered[case.name] = answer["statusCode"]
            doc = orjson.loads(answer["body"])
            assert answer["statusCode"] in (202, 400), (case.name, answer)
            if answer["statusCode"] == 202:
                assert doc["accepted"] + len(doc["rejected"]) >= 1
            else:
                assert doc.get("error") or doc.get("rejected"), (case.name, doc)
    finally:
        handler.engine.close()
    assert list(answered.values()).count(202) >= 20 and list(answered.values()).count(400) >= 20


def _poison_bolt():
    from squall.bolts.base import Bolt, Output
    from squall.component import ComponentConfig

    class Poison(Bolt):
        Config = ComponentConfig
        summary = "Raise on records with a 'poison' key (tests)."

        def process(self, batch):
            out = Output(self.id)
            for ev in batch:
                if "poison" in ev.value:
                    raise ValueError("a bug in a user bolt")
                out.emit(ev)
            return out

    return Poison


POISON_YAML = """
name: poison
resources: {{db: {{url: "{url}"}}}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts: [{{id: decode, type: json}}{bolt}]
sinks:
  - {{id: rows, type: warehouse, resource: db, table: {table}, columns: {{n: {{path: n, type: integer}}, k: {{path: k, index: true}}}}}}
  - {{id: dlq, type: dead_letter, path: {dlq}}}
"""


def test_a_record_that_makes_a_user_bolt_raise_is_dead_lettered_alone(
    tmp_path: Path, monkeypatch, unique_name
):
    import types

    from squall.testing import records_from, run_topology

    module = types.ModuleType("squall_test_poison")
    module.Poison = _poison_bolt()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "squall_test_poison", module)
    yaml = POISON_YAML.format(
        url=f"sqlite:///{tmp_path / 'w.db'}",
        table=unique_name,
        dlq=tmp_path / "dl.jsonl",
        bolt=", {id: buggy, type: 'squall_test_poison:Poison'}",
    )
    run = run_topology(yaml, records_from([{"n": 1}, {"n": 2, "poison": True}, {"n": 3}]))
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]


def test_a_value_too_large_for_a_postgresql_index_is_dead_lettered_alone(
    tmp_path: Path, pg_url: str, unique_name: str
):
    import os

    from squall.testing import records_from, run_topology

    huge = os.urandom(
        6000
    ).hex()  # incompressible: over PostgreSQL's B-tree row limit (SQLSTATE 54000)
    yaml = POISON_YAML.format(url=pg_url, table=unique_name, dlq=tmp_path / "dl.jsonl", bolt="")
    try:
        run = run_topology(
            yaml, records_from([{"n": 1, "k": "a"}, {"n": 2, "k": huge}, {"n": 3, "k": "b"}])
        )
        assert [o.outcome for o in run.outcomes] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.COMMITTED,
        ]
    finally:
        import sqlalchemy as sa

        with sa.create_engine(
            pg_url.replace("postgresql://", "postgresql+psycopg2://")
        ).begin() as conn:
            conn.exec_driver_sql(f'drop table if exists "{unique_name}"')


def test_the_corpus_on_postgresql_and_redis_is_accounted_for(
    tmp_path: Path, pg_url: str, redis_url: str, unique_name: str
):
    example = _copy_example(tmp_path / "pistats")
    src = tmp_path / "corpus.jsonl"
    src.write_bytes(b"".join(line + b"\n" for case in record_cases() for line in case.lines))
    env = child_env(
        HOME=str(tmp_path), WAREHOUSE_URL=pg_url, STATE_URL=redis_url, EVENTS_TABLE=unique_name
    )
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "squall.cli",
                "run",
                "topology.yaml",
                "--input",
                str(src),
                "--batch-size",
                "25",
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            cwd=example,
            env=env,
            timeout=600,
        )
        assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        committed, dead, filtered, failed = (
            int(g.replace(",", "")) for g in SUMMARY.search(proc.stdout + proc.stderr).groups()
        )
        assert failed == 0 and committed + dead + filtered == sum(c.records for c in record_cases())
        import sqlalchemy as sa

        engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://"))
        with engine.connect() as conn:
            assert (
                conn.exec_driver_sql(f'select count(*) from "{unique_name}"').scalar() == committed
            )
        assert len((example / "out" / "rejects.jsonl").read_bytes().splitlines()) == dead
    finally:
        import sqlalchemy as sa

        with sa.create_engine(
            pg_url.replace("postgresql://", "postgresql+psycopg2://")
        ).begin() as conn:
            conn.exec_driver_sql(f'drop table if exists "{unique_name}"')
