"""The benchmark harness: the hand loops store what squall stores, and the checker notices when not.

Small inputs (a few hundred events of the example): these check the instruments, not speed.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import sqlite3
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import EXAMPLES, ROOT

sys.path.insert(0, str(ROOT))

from benchmarks.check import Mismatch, compare, dump, snapshot  # noqa: E402
from benchmarks.check import main as check_main  # noqa: E402
from benchmarks.run import run_variant  # noqa: E402

EVENTS = 250


@pytest.fixture(scope="module")
def events_file(tmp_path_factory) -> Path:
    """The first events of the bundled sample (it has every kind of bad line)."""
    lines = gzip.decompress((EXAMPLES / "pistats" / "events.jsonl.gz").read_bytes()).splitlines()[
        :EVENTS
    ]
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def sqlite_runs(events_file, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("runs")
    return {
        v: run_variant(v, events_file, tmp, "sqlite", "", 100)[1]
        for v in ("squall", "optimized", "naive")
    }


def test_hand_loops_store_what_squall_stores_on_sqlite(sqlite_runs):
    reference = snapshot(sqlite_runs["squall"])
    assert len(reference["rows"]) > 200
    assert reference["states"], "the sample has subscription events"
    components = {d["component"] for d in reference["dead_letters"]}
    assert {"decode", "validate"} <= components
    for variant in ("optimized", "naive"):
        compare(reference, snapshot(sqlite_runs[variant]), variant)


def test_checker_names_a_differing_row_value(sqlite_runs, tmp_path):
    out = sqlite_runs["optimized"]
    copy = tmp_path / "warehouse.db"
    shutil.copy(out.warehouse.removeprefix("sqlite:///"), copy)
    db = sqlite3.connect(copy)
    table = out.events_table
    event_id = db.execute(
        f"SELECT event_id FROM {table} ORDER BY event_id LIMIT 1 OFFSET 7"
    ).fetchone()[0]
    db.execute(f"UPDATE {table} SET city = 'Elsewhere' WHERE event_id = ?", (event_id,))
    db.commit()
    db.close()
    changed = dataclasses.replace(out, warehouse=f"sqlite:///{copy}")
    with pytest.raises(Mismatch, match=r"rows: (?s:.*)first difference(?s:.*)Elsewhere"):
        compare(snapshot(sqlite_runs["squall"]), snapshot(changed), "optimized")
    # The command run.py calls after every round fails the same way, and passes on equal outputs.
    ref = dump(sqlite_runs["squall"], tmp_path / "ref.json")
    assert check_main([str(ref), str(dump(changed, tmp_path / "changed.json")), "changed"]) == 1
    assert (
        check_main([str(ref), str(dump(sqlite_runs["naive"], tmp_path / "naive.json")), "naive"])
        == 0
    )


def test_checker_notices_a_changed_state_and_a_missing_dead_letter(sqlite_runs):
    reference = snapshot(sqlite_runs["squall"])
    got = snapshot(sqlite_runs["naive"])
    changed = dict(got)
    changed["states"] = [
        (*got["states"][0][:2], not got["states"][0][2], *got["states"][0][3:]),
        *got["states"][1:],
    ]
    with pytest.raises(Mismatch, match="states"):
        compare(reference, changed, "naive")
    fewer = dict(got)
    fewer["dead_letters"] = got["dead_letters"][1:]
    with pytest.raises(Mismatch, match="dead_letters"):
        compare(reference, fewer, "naive")


def test_dead_letters_compare_without_their_time(sqlite_runs):
    docs = snapshot(sqlite_runs["squall"])["dead_letters"]
    assert docs and all("failed_at" not in d for d in docs)
    raw = [orjson.loads(line) for line in sqlite_runs["squall"].rejects.read_bytes().splitlines()]
    assert all("failed_at" in d for d in raw)


def test_hand_loops_store_what_squall_stores_on_postgresql(
    events_file, tmp_path, pg_url, unique_name
):
    runs = {
        v: run_variant(v, events_file, tmp_path, "postgresql", pg_url, 100, prefix=unique_name)[1]
        for v in ("squall", "optimized", "naive")
    }
    try:
        reference = snapshot(runs["squall"])
        assert len(reference["rows"]) > 200
        for variant in ("optimized", "naive"):
            compare(reference, snapshot(runs[variant]), variant)
    finally:
        from benchmarks.run import _drop_pg

        _drop_pg(pg_url, [t for o in runs.values() for t in (o.events_table, o.state_table)])


def test_make_events_reproduces_the_bundled_sample():
    sys.path.insert(0, str(EXAMPLES / "pistats"))
    import make_events

    bundled = (
        gzip.decompress((EXAMPLES / "pistats" / "events.jsonl.gz").read_bytes())
        .decode()
        .splitlines()
    )
    assert list(make_events.events(len(bundled))) == bundled


def test_the_optimized_loop_writes_sqlite_with_squalls_journal(sqlite_runs):
    """Like with like: the loop's SQLite files use the journal and durability of squall's driver
    (SQLite's default rollback journal costs more CPU per commit than WAL)."""
    from benchmarks.hand_loop import SQLITE_PRAGMAS
    from squall.topology.sqlite_driver import CONNECTION_PRAGMAS

    assert SQLITE_PRAGMAS == CONNECTION_PRAGMAS
    for variant in ("squall", "optimized"):
        url = sqlite_runs[variant].warehouse
        db = sqlite3.connect(url[len("sqlite:///") :])
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal", variant
        finally:
            db.close()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux /proc only")
def test_lambda_bench_counts_the_resident_pages_of_a_mapped_file(tmp_path):
    """lambda_bench's ``geo_mapped_mb``: the resident pages of the mappings of one kind of file."""
    import mmap

    from benchmarks.lambda_bench import mapped_mb

    path = tmp_path / "four pages.mmdb"  # a space in the name: the path is the line's last field
    path.write_bytes(b"\x01" * (4 * mmap.PAGESIZE))
    before = mapped_mb(".mmdb")
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        assert sum(mapping[i] for i in range(0, len(mapping), mmap.PAGESIZE)) == 4
        assert mapped_mb(".mmdb") - before == 4 * mmap.PAGESIZE / 2**20
    assert mapped_mb(".mmdb") == before


def test_lambda_ab_pairs_rounds_and_summarises_init_only_runs():
    """``lambda_ab``: an init-only round has no invocations; the ratios are per round."""
    from benchmarks.lambda_ab import paired, summary

    def doc(init: float, invocations: list[float]) -> dict:
        return {
            "init_cpu_ms": init,
            "import_cpu_ms": init / 2,
            "make_handler_cpu_ms": init / 2,
            "init_ms": init,
            "rss_after_init_mb": 40.0,
            "invoke_cpu_ms": invocations,
        }

    rounds = {"base": [doc(300, []), doc(400, [])], "head": [doc(240, []), doc(360, [])]}
    assert summary(rounds["base"])["init_cpu_ms"] == 350
    assert "invoke_1_cpu_ms" not in summary(rounds["base"])
    ratios = paired(rounds)
    assert ratios["init_cpu_ms"] == pytest.approx({"median": 0.85, "min": 0.8, "max": 0.9})
    assert "invoke_1_cpu_ms" not in ratios
    rounds = {"base": [doc(300, [500, 400])], "head": [doc(240, [450, 200])]}
    assert paired(rounds)["invoke_2_cpu_ms"]["median"] == 0.5


BENCHMARK_MODULES = sorted(
    p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")
)


@pytest.mark.parametrize("name", BENCHMARK_MODULES)
def test_every_benchmark_module_imports_what_squall_has(name):
    """A benchmark that names a squall function since renamed stops at its import, unnoticed until
    someone runs it (bench_enrichment.py imported geo's ``_fill_city`` long after it became
    ``_city_block``). A third-party module only a script needs (scikit-learn, ...) may be absent."""
    import importlib

    try:
        importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("squall", "benchmarks"):
            raise
        pytest.skip(f"needs {exc.name}, which only this script uses")
