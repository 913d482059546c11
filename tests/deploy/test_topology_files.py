"""What of the topology's folder ships: files the topology reads must be in the package, and links
must not point nowhere or loop. Refused before `squall package` downloads anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from squall.deploy import package as pkg
from squall.deploy.topology_files import check_folder, copy_folder
from squall.errors import SquallError, TopologyError
from squall.topology.loader import load

SCHEMA = '{"type": "object"}'


def topology(folder: Path, schema: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "topology.yaml"
    path.write_text(
        "name: t\nspout: {type: stdin}\nbolts:\n  - {id: decode, type: json}\n"
        f"  - {{id: validate, type: schema, schema: {schema}}}\n"
        f"sinks:\n  - {{id: out, type: stdout}}\n{extra}"
    )
    return path


def check(path: Path) -> None:
    check_folder(load(path), path.read_text())


@pytest.mark.parametrize(
    ("where", "schema", "expected"),
    [
        ("shared/event.json", "../shared/event.json", "is outside the topology's folder"),
        ("t/build/event.json", "build/event.json", "is left out of packages (it matches 'build')"),
        ("t/.schemas/event.json", ".schemas/event.json", "(it matches '.*')"),
    ],
)
def test_a_file_the_topology_reads_that_would_not_ship_is_a_located_error(
    tmp_path: Path, where: str, schema: str, expected: str
):
    """It loads here, and the function would fail at init in Lambda (/var/task/shared/… is not there)."""
    (tmp_path / where).parent.mkdir(parents=True)
    (tmp_path / where).write_text(SCHEMA)
    path = topology(tmp_path / "t", schema)
    with pytest.raises(TopologyError) as e:
        check(path)
    [problem] = e.value.problems
    assert (problem.line, problem.path) == (5, "bolts[1].schema")
    assert expected in problem.message and str(tmp_path / "t") in problem.message
    # package refuses it before building anything
    with pytest.raises(TopologyError, match="outside|left out"):
        pkg.build(path, handler="consumer", output=tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_files_inside_the_folder_and_paths_written_at_run_time_pass(tmp_path: Path):
    (tmp_path / "t" / "schemas").mkdir(parents=True)
    (tmp_path / "t" / "schemas" / "event.json").write_text(SCHEMA)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "rejects.jsonl").write_text("")  # written by a local run
    rejects = "  - {id: rejects, type: dead_letter, path: ../out/rejects.jsonl}\n"
    path = topology(tmp_path / "t", "schemas/event.json", rejects)
    check(path)
    copy_folder(path.parent, tmp_path / "copy")
    assert (tmp_path / "copy" / "schemas" / "event.json").read_text() == SCHEMA


def test_a_dangling_link_or_a_link_loop_is_refused_with_its_name(tmp_path: Path):
    folder = tmp_path / "t"
    path = topology(folder, "{type: object}")
    (folder / "data").mkdir()
    (folder / "data" / "current").symlink_to(tmp_path / "gone")
    with pytest.raises(
        SquallError, match=r"data/current in .* is a link to .*gone, which does not"
    ):
        check(path)
    (folder / "data" / "current").unlink()
    (folder / "data" / "all").symlink_to("..")
    with pytest.raises(SquallError, match="data/all in .* is a link to a folder that contains it"):
        check(path)
    (folder / "data" / "all").unlink()
    (tmp_path / "lookups").mkdir()
    (tmp_path / "lookups" / "codes.csv").write_text("a,b\n")
    (folder / "data" / "lookups").symlink_to(tmp_path / "lookups")  # followed: its files ship
    (folder / ".venv").mkdir()
    (folder / ".venv" / "python").symlink_to(tmp_path / "gone")  # left out anyway
    check(path)
    copy_folder(folder, tmp_path / "copy")
    assert (tmp_path / "copy" / "data" / "lookups" / "codes.csv").read_text() == "a,b\n"


def test_a_topology_file_that_is_a_link_is_named_by_its_target_in_the_handler(
    tmp_path: Path, monkeypatch
):
    """The copied folder is the target's: the handler must open the target's name there."""
    real = topology(tmp_path / "configs", "{type: object}")
    real.rename(real.with_name("prod.yaml"))
    link = tmp_path / "topology.yaml"
    link.symlink_to(real.with_name("prod.yaml"))
    written = {}

    def stop(output, sources):  # the zip's content, without installing any dependency
        code = next(folder for folder, prefix in sources if (folder / "squall_lambda.py").exists())
        written["handler"] = (code / "squall_lambda.py").read_text()
        written["files"] = sorted(os.listdir(code / "topology"))
        raise SystemExit

    monkeypatch.setattr(pkg, "_pip", lambda *args: None)
    monkeypatch.setattr(pkg, "_write_zip", stop)
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    with pytest.raises(SystemExit):
        pkg.build(link, handler="consumer", output=tmp_path / "x.zip", compile_bytecode=False)
    assert "'prod.yaml'" in written["handler"] and "prod.yaml" in written["files"]


def test_the_kcl_fleet_folder_is_checked_and_started_with_the_link_target_s_name(tmp_path: Path):
    from squall.deploy.fleet import write_fleet

    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "event.json").write_text(SCHEMA)
    rejects = "  - {id: rejects, type: dead_letter, path: /tmp/rejects.jsonl}\n"
    path = topology(tmp_path / "t", "../shared/event.json", rejects)
    path.write_text(path.read_text().replace("  - {id: out, type: stdout}\n", ""))
    with pytest.raises(TopologyError, match="outside the topology's folder"):
        write_fleet(load(path), path, tmp_path / "kcl", stream="s")
    path.write_text(path.read_text().replace("../shared/event.json", "{type: object}"))
    path.rename(tmp_path / "t" / "prod.yaml")
    link = tmp_path / "topology.yaml"
    link.symlink_to(tmp_path / "t" / "prod.yaml")
    write_fleet(load(link), link, tmp_path / "kcl", stream="s")
    unit = next((tmp_path / "kcl").glob("*.service")).read_text()
    assert "topology/prod.yaml" in unit and (tmp_path / "kcl" / "topology" / "prod.yaml").is_file()


@pytest.mark.parametrize("deleted", [False, True], ids=["file", "file-deleted"])
def test_a_file_a_local_run_wrote_in_the_folder_is_not_shipped(
    tmp_path: Path, monkeypatch, deleted: bool
):
    """A dead-letter file beside the topology holds records (personal data, maybe), not code; its
    index neither, also when the file was deleted by hand and the index left (it was shipped)."""
    from squall.deploy.fleet import write_fleet

    rejects = "  - {id: rejects, type: dead_letter, path: rejects/dead.jsonl}\n"
    path = topology(tmp_path / "t", "{type: object}", rejects)
    path.write_text(path.read_text().replace("  - {id: out, type: stdout}\n", ""))
    (tmp_path / "t" / "rejects").mkdir()
    (tmp_path / "t" / "rejects" / "dead.jsonl").write_text('{"email": "a@example.com"}\n')
    (tmp_path / "t" / "rejects" / "dead.jsonl.index").write_bytes(b"SQLite format 3")  # its keys
    (tmp_path / "t" / "rejects" / "README").write_text("kept")
    if deleted:
        (tmp_path / "t" / "rejects" / "dead.jsonl").unlink()
        (tmp_path / "t" / "rejects" / "dead.jsonl.index-wal").write_bytes(b"")
    written = {}

    def stop(output, sources):
        code = next(folder for folder, prefix in sources if (folder / "squall_lambda.py").exists())
        written["files"] = sorted(
            p.relative_to(code).as_posix() for p in (code / "topology").rglob("*") if p.is_file()
        )
        raise SystemExit

    monkeypatch.setattr(pkg, "_pip", lambda *args: None)
    monkeypatch.setattr(pkg, "_write_zip", stop)
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    with pytest.raises(SystemExit):
        pkg.build(path, handler="consumer", output=tmp_path / "x.zip", compile_bytecode=False)
    assert "topology/rejects/README" in written["files"]
    assert "topology/rejects/dead.jsonl" not in written["files"]
    assert "topology/rejects/dead.jsonl.index" not in written["files"]
    assert "topology/rejects/dead.jsonl.index-wal" not in written["files"]
    write_fleet(load(path), path, tmp_path / "kcl", stream="s")
    assert (tmp_path / "kcl" / "topology" / "rejects" / "README").is_file()
    assert not (tmp_path / "kcl" / "topology" / "rejects" / "dead.jsonl").exists()
    assert not (tmp_path / "kcl" / "topology" / "rejects" / "dead.jsonl.index").exists()
    assert not (tmp_path / "kcl" / "topology" / "rejects" / "dead.jsonl.index-wal").exists()


def test_the_file_spout_s_input_is_not_shipped_and_the_summary_says_why(
    tmp_path: Path, monkeypatch
):
    """Deployed, the trigger (or the KCL) delivers the records: a sample input in the folder
    only makes the zip bigger (pistats' events.jsonl.gz; a real dump passes Lambda's limits)."""
    import zipfile

    from click.testing import CliRunner

    from squall.cli import main as cli
    from squall.deploy.fleet import write_fleet

    folder = tmp_path / "t"
    path = topology(folder, "{type: object}")
    text = path.read_text().replace("{type: stdin}", "{type: file, path: data/in.jsonl}")
    path.write_text(text.replace("type: stdout", "type: dead_letter, path: /tmp/dl.jsonl"))
    (folder / "data").mkdir()
    (folder / "data" / "in.jsonl").write_text('{"n": 1}\n')
    (folder / "data" / "lookup.jsonl").write_text('{"n": 2}\n')  # not the spout's: shipped
    monkeypatch.setattr(pkg, "_pip", lambda *args: None)  # no dependency: the folder alone
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    out = tmp_path / "fn.zip"
    result = CliRunner().invoke(
        cli, ["package", str(path), "--handler", "consumer", "-o", str(out), "--no-compile"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "  left out: data/in.jsonl (input of the file spout 'spout', which does not run "
        "deployed (the trigger delivers the records))" in result.output
    )
    names = zipfile.ZipFile(out).namelist()
    assert "topology/data/lookup.jsonl" in names and "topology/data/in.jsonl" not in names
    write_fleet(load(path), path, tmp_path / "kcl", stream="s")
    assert (tmp_path / "kcl" / "topology" / "data" / "lookup.jsonl").is_file()
    assert not (tmp_path / "kcl" / "topology" / "data" / "in.jsonl").exists()


def test_a_spout_input_a_bolt_reads_too_ships(tmp_path: Path):
    from squall.deploy.topology_files import left_out

    folder = tmp_path / "t"
    path = topology(folder, "shared.json")
    path.write_text(path.read_text().replace("{type: stdin}", "{type: file, path: ./shared.json}"))
    (folder / "shared.json").write_text(SCHEMA + "\n")
    assert left_out(load(path), path.read_text()) == []
    (folder / "in.jsonl").write_text("{}\n")
    path.write_text(path.read_text().replace("./shared.json}", "in.jsonl}"))
    assert [item.path for item in left_out(load(path), path.read_text())] == ["in.jsonl"]
