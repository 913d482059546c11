"""``squall kcl`` and its shard processes: the log format, and a topology changed under a worker."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from click.testing import CliRunner

from squall.cli import main
from squall.deploy import kcl_daemon
from tests.kinesis.test_kcl_stream_arn import topology_file


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--log-format", "json"], {}, "json"),
        (["--log-format", "text"], {"SQUALL_LOG_FORMAT": "json"}, "text"),
        ([], {"SQUALL_LOG_FORMAT": "json"}, "json"),
        ([], {}, "text"),
    ],
)
def test_the_shard_processes_get_the_command_s_log_format(
    tmp_path, monkeypatch, args, env, expected
):
    """The daemon starts one ``python -m squall.deploy.kcl`` per shard, which reads its format from
    ``SQUALL_LOG_FORMAT``. The option was not passed on: under ``squall --log-format json kcl``
    the command's lines were JSON and every shard process's (the batches' lines, their failures)
    text, which a log pipeline parsing JSON drops or mangles (seen in the on-call rehearsal)."""
    started: list[dict] = []
    monkeypatch.setattr(kcl_daemon, "run_daemon", lambda cmd, env: started.append(env) or 0)
    monkeypatch.delenv("SQUALL_LOG_FORMAT", raising=False)
    topology = topology_file(tmp_path, "pistats")
    argv = [*args, "kcl", str(topology), "--properties-out", str(tmp_path / "kcl.properties")]
    result = CliRunner().invoke(main, argv, env={"AWS_REGION": "us-east-1", **env})
    assert result.exit_code == 0, result.output
    (daemon_env,) = started
    assert daemon_env["SQUALL_LOG_FORMAT"] == expected


def test_a_shard_process_started_after_the_topology_changed_says_so(tmp_path, monkeypatch, caplog):
    """Each shard process reads the topology file when it starts. In the on-call rehearsal a
    file changed under a running worker (geo's ``anonymize_ip`` turned off) ran in a split's
    children while the running shard kept the old version: one table, two versions, and not a
    word in the log. ``squall kcl`` passes the file's digest; a shard process that reads another
    file warns, naming it and the restart that makes one version again."""
    from squall.deploy.kcl import TOPOLOGY_DIGEST_ENV, warn_if_topology_changed

    started: list[dict] = []
    monkeypatch.setattr(kcl_daemon, "run_daemon", lambda cmd, env: started.append(env) or 0)
    topology = topology_file(tmp_path, "pistats")
    argv = ["kcl", str(topology), "--properties-out", str(tmp_path / "kcl.properties")]
    result = CliRunner().invoke(main, argv, env={"AWS_REGION": "us-east-1"})
    assert result.exit_code == 0, result.output
    (daemon_env,) = started
    monkeypatch.setenv(TOPOLOGY_DIGEST_ENV, daemon_env[TOPOLOGY_DIGEST_ENV])
    caplog.set_level("WARNING", logger="squall.kcl")
    assert not warn_if_topology_changed(str(topology))  # the file squall kcl started with
    assert not caplog.records
    topology.write_text(topology.read_text() + "\n# v2\n")
    assert warn_if_topology_changed(str(topology))
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"topology file {topology} changed since `squall kcl` started" in line
    assert "restart the worker" in line


def configmap(tmp_path, name: str, text: str) -> None:
    """A Kubernetes ConfigMap volume: ``topology.yaml`` -> ``..data/topology.yaml``, ``..data`` a
    symlink to a timestamped folder; an update writes a new folder, swaps ``..data`` atomically
    and deletes the old folder."""
    folder = tmp_path / "cm" / f"..{name}"
    folder.mkdir(parents=True)
    (folder / "topology.yaml").write_text(text)
    tmp_link = tmp_path / "cm" / "..data_tmp"
    tmp_link.symlink_to(folder.name)
    old = (tmp_path / "cm" / "..data").resolve() if (tmp_path / "cm" / "..data").exists() else None
    tmp_link.replace(tmp_path / "cm" / "..data")
    if old is not None:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    link = tmp_path / "cm" / "topology.yaml"
    if not link.is_symlink():
        link.symlink_to("..data/topology.yaml")


def test_a_configmap_topology_is_read_through_its_symlink(tmp_path, monkeypatch, caplog):
    """The shard processes' command named the topology file with its symlinks resolved: on a
    Kubernetes ConfigMap (a symlink into a timestamped folder, swapped atomically on an update,
    the old folder deleted) every shard process started after an update - a split's children,
    a lease taken over - could not read its topology (the folder was gone) and exited, restarted
    by the daemon for ever, the shard unread; and no warning said the file had changed. The
    command names the file as given (absolute, symlinks kept)."""
    from squall.deploy.kcl import TOPOLOGY_DIGEST_ENV, warn_if_topology_changed

    started: list[dict] = []
    monkeypatch.setattr(kcl_daemon, "run_daemon", lambda cmd, env: started.append(env) or 0)
    text = topology_file(tmp_path, "pistats").read_text()
    configmap(tmp_path, "2026_12_07_10_00_00.1", text)
    topology = tmp_path / "cm" / "topology.yaml"
    props = tmp_path / "kcl.properties"
    argv = ["kcl", str(topology), "--properties-out", str(props)]
    result = CliRunner().invoke(main, argv, env={"AWS_REGION": "us-east-1"})
    assert result.exit_code == 0, result.output
    (daemon_env,) = started
    (line,) = [x for x in props.read_text().splitlines() if x.startswith("executableName")]
    shard_arg = line.split("=", 1)[1].split()[3]  # python -m squall.deploy.kcl TOPOLOGY ...
    assert shard_arg == str(topology)
    configmap(tmp_path, "2026_12_07_11_00_00.2", text + "\n# v2\n")  # kubectl apply
    assert open(shard_arg).read().endswith("# v2\n")  # what a shard process started now reads
    monkeypatch.setenv(TOPOLOGY_DIGEST_ENV, daemon_env[TOPOLOGY_DIGEST_ENV])
    caplog.set_level("WARNING", logger="squall.kcl")
    assert warn_if_topology_changed(shard_arg)


def test_a_relative_topology_path_is_made_absolute_for_the_shard_processes(tmp_path, monkeypatch):
    """The daemon's shard processes may run in another working directory: the command names
    the file by an absolute path (as before), though no longer with its symlinks resolved."""
    monkeypatch.setattr(kcl_daemon, "run_daemon", lambda cmd, env: 0)
    topology = topology_file(tmp_path, "pistats")
    monkeypatch.chdir(topology.parent)
    props = tmp_path / "kcl.properties"
    argv = ["kcl", topology.name, "--properties-out", str(props)]
    result = CliRunner().invoke(main, argv, env={"AWS_REGION": "us-east-1"})
    assert result.exit_code == 0, result.output
    (line,) = [x for x in props.read_text().splitlines() if x.startswith("executableName")]
    assert line.split("=", 1)[1].split()[3] == str(topology)


def test_a_topology_file_written_while_a_shard_process_reads_it_is_read_again(
    tmp_path, monkeypatch, caplog
):
    """A file written in place (an editor, ``cp``) while a shard process started gave it part of
    the new text: a topology cut short (here without its last bolt) still parses and ran, and
    the warning said the process ran the file "as it is now" — the whole new file. The shard
    process reads the file until it is the same before and after its load."""
    from squall.deploy import kcl
    from squall.deploy.kcl import TOPOLOGY_DIGEST_ENV, load_topology
    from squall.topology.loader import load

    topology = topology_file(tmp_path, "pistats")
    v1 = topology.read_text()
    monkeypatch.setenv(TOPOLOGY_DIGEST_ENV, hashlib.sha256(v1.encode()).hexdigest())
    v2 = v1.replace(
        "  - {id: decode, type: json, event_id_field: id}\n",
        "  - {id: decode, type: json, event_id_field: id}\n  - {id: keep, type: filter, "
        "where: [{field: n, equals: 1}]}\n",
    )
    assert v2 != v1
    loads: list[int] = []

    def written_meanwhile(path, **kwargs):  # the writer is half-way when the process reads
        if not loads:
            topology.write_text(v2[: v2.index("  - {id: keep")] + "sinks:" + v2.split("sinks:")[1])
        loaded = load(path, **kwargs)
        loads.append(len(loaded.bolts))
        topology.write_text(v2)  # ... and done after
        return loaded

    monkeypatch.setattr(kcl, "load", written_meanwhile)
    caplog.set_level("WARNING", logger="squall.kcl")
    loaded = load_topology(str(topology), quiet=0)
    assert [b.id for b in loaded.bolts] == ["decode", "keep"]  # the whole new file
    assert loads == [1, 2]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "changed since `squall kcl` started" in line


def test_a_configmap_swapped_while_a_shard_process_reads_it_is_read_again(tmp_path, monkeypatch):
    """A Kubernetes ConfigMap update swaps ``..data`` to a new folder: one that changed a file the
    topology names (a schema) but not the topology file itself was not seen — the topology file's
    digest is the same — and the shard process ran its topology with files of two versions. The
    folder the symlinks lead to is compared before and after the load too."""
    import os

    from squall.deploy import kcl
    from squall.deploy.kcl import load_topology
    from squall.topology.loader import load

    source = topology_file(tmp_path, "pistats")
    mount = tmp_path / "mount"
    for version in ("..v1", "..v2"):
        (mount / version).mkdir(parents=True)
        (mount / version / "topology.yaml").write_text(source.read_text())  # the same text
    (mount / "..data").symlink_to("..v1")
    (mount / "topology.yaml").symlink_to("..data/topology.yaml")
    loads: list[str] = []

    def swapped_meanwhile(path, **kwargs):  # the update lands while the process reads
        loaded = load(path, **kwargs)
        loads.append(os.path.realpath(path))
        if len(loads) == 1:
            (mount / "..tmp").symlink_to("..v2")
            os.replace(mount / "..tmp", mount / "..data")  # atomic, as the kubelet does it
        return loaded

    monkeypatch.setattr(kcl, "load", swapped_meanwhile)
    load_topology(str(mount / "topology.yaml"), quiet=0)
    assert loads == [str(mount / "..v1" / "topology.yaml"), str(mount / "..v2" / "topology.yaml")]


def test_a_topology_file_cut_where_it_does_not_parse_is_read_again(tmp_path, monkeypatch):
    """The file read again when it changed during the load — only when the part read still
    parsed: one cut short where it did not (a YAML error) ended the shard process with the error
    of a text that no longer exists. Its error stands only if the file did not change."""
    from squall.deploy import kcl
    from squall.deploy.kcl import load_topology
    from squall.errors import TopologyError
    from squall.topology.loader import load

    topology = topology_file(tmp_path, "pistats")
    whole = topology.read_text()
    calls: list[int] = []

    def written_meanwhile(path, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            topology.write_text(whole[: whole.index("{") + 3])  # half-written
            try:
                return load(path, **kwargs)
            finally:
                topology.write_text(whole + "# v2\n")  # ... and done
        return load(path, **kwargs)

    monkeypatch.setattr(kcl, "load", written_meanwhile)
    assert load_topology(str(topology), quiet=0).bolts
    assert len(calls) == 2
    topology.write_text(whole[: whole.index("{") + 3])  # a broken file that stays broken
    with pytest.raises(TopologyError, match="YAML"):
        load_topology(str(topology), quiet=0)
    assert len(calls) == 3


def two_bolts(tmp_path) -> str:
    """A topology whose bolts come last: the text cut after its first bolt still parses."""
    text = topology_file(tmp_path, "pistats").read_text()
    bolts = "bolts:\n  - {id: decode, type: json, event_id_field: id}\n"
    assert bolts in text
    keep = "  - {id: keep, type: filter, where: [{field: n, equals: 1}]}\n"
    return text.replace(bolts, "") + bolts + keep


def written(path, text: str, ago: float) -> None:
    path.write_text(text)
    mtime = time.time() - ago
    os.utime(path, (mtime, mtime))


@pytest.mark.parametrize("cut", ["parses", "does not parse"])
def test_a_topology_file_whose_writer_paused_part_way_is_waited_for(tmp_path, cut):
    """A writer that paused part-way (its second write() 5 ms after its first: a network copy, a
    slow disk) left a cut text the same before and after a load of a few milliseconds: measured,
    the shard process ran the topology without its last bolt, or exited with the YAML error of
    a text that was gone 5 ms later — what the before/after comparison was to prevent. A file
    written in the last ``quiet`` seconds is read again once it has gone that long unwritten."""
    from squall.deploy.kcl import load_topology

    topology = tmp_path / "topology.yaml"
    whole = two_bolts(tmp_path)
    part = whole[: whole.index("  - {id: keep")]  # up to the end of the first bolt
    if cut == "does not parse":
        part = whole[: whole.index("{id: keep") + 5]
    written(topology, part, ago=0)  # the writer's first write, just now
    waits: list[float] = []

    def the_writer_finishes(seconds: float) -> None:
        waits.append(seconds)
        written(topology, whole, ago=7200)

    loaded = load_topology(str(topology), quiet=3600, sleep=the_writer_finishes)
    assert [b.id for b in loaded.bolts] == ["decode", "keep"]
    assert len(waits) == 1 and 0 < waits[0] <= 3600


@pytest.mark.parametrize("clock", ["ahead", "coarse"])
def test_a_paused_writer_is_waited_for_whatever_the_file_s_clock(tmp_path, clock):
    """The file's time is the writer's clock's, at its file system's resolution. Ahead of this
    clock's (an NFS server's or another host's clock 0.5 s ahead) it read as no write at all: the
    cut text was run at once. A whole second (HFS+, FAT) is the start of the second the write
    happened in: a file written 0.9 s into its second read as 0.9 s old, waited for 0.1 s —
    here a file 3599.x s old by its time with ``quiet`` 3600: waited for 1 s at most, while the
    writer's pause is longer. Both are waited for at least as long as the writer may have written
    since."""
    from squall.deploy.kcl import load_topology

    topology = tmp_path / "topology.yaml"
    whole = two_bolts(tmp_path)
    part = whole[: whole.index("  - {id: keep")]
    topology.write_text(part)
    if clock == "ahead":
        mtime_ns = time.time_ns() + 500_000_000
    else:  # a whole second: 3599 s before the start of this one, 3599.x s ago
        mtime_ns = (int(time.time()) - 3599) * 1_000_000_000
    os.utime(topology, ns=(mtime_ns, mtime_ns))
    waits: list[float] = []

    def the_writer_pauses(seconds: float) -> None:
        waits.append(seconds)
        if seconds > 1:
            written(topology, whole, ago=7200)

    loaded = load_topology(str(topology), quiet=3600, sleep=the_writer_pauses)
    assert [b.id for b in loaded.bolts] == ["decode", "keep"]
    assert len(waits) == 1


def test_a_broken_topology_file_is_one_located_error(tmp_path):
    """Invalid YAML that stays so is its located error, raised once, after one wait whatever the
    file's time: a file being truncated (``open(path, "w")``, a shrinking ext4 file) was seen
    empty with its old time for 7 ms, and its "the file is empty" error raised. A valid file
    whose time is ahead of the clock's (another host's clock) is waited for once: its time says
    nothing of its age."""
    from squall.deploy.kcl import load_topology
    from squall.errors import TopologyError

    topology = tmp_path / "topology.yaml"
    whole = two_bolts(tmp_path)
    broken = whole[: whole.index("{id: keep") + 5]
    waits: list[float] = []
    for ago, expected in ((7200, 1), (-7200, 1), (0, 1)):
        written(topology, broken, ago=ago)
        waits.clear()
        with pytest.raises(TopologyError, match=r"topology.yaml:\d+:\d+: YAML syntax error"):
            load_topology(str(topology), quiet=3600, sleep=waits.append)
        assert len(waits) == expected, ago
    waits.clear()
    written(topology, "", ago=7200)  # the moment of a truncation
    with pytest.raises(TopologyError, match="the file is empty"):
        load_topology(str(topology), quiet=3600, sleep=waits.append)
    assert len(waits) == 1
    waits.clear()
    written(topology, whole, ago=-7200)  # a time ahead of this clock's: waited for, once
    assert len(load_topology(str(topology), quiet=3600, sleep=waits.append).bolts) == 2
    assert waits == [3600]


def test_a_topology_file_written_for_ever_is_given_up_on_saying_why(tmp_path):
    """A file written again and again (a sync loop) is not read for ever: 5 reads, then an error
    naming the file and why."""
    from squall.deploy.kcl import load_topology
    from squall.errors import SquallError

    topology = tmp_path / "topology.yaml"
    whole = two_bolts(tmp_path)
    written(topology, whole, ago=0)
    waits: list[float] = []

    def written_again(seconds: float) -> None:
        waits.append(seconds)
        written(topology, whole + f"# {len(waits)}\n", ago=0)

    with pytest.raises(SquallError, match="kept changing while it was read: 5 reads") as caught:
        load_topology(str(topology), quiet=3600, sleep=written_again)
    assert str(topology) in str(caught.value)
    assert len(waits) == 5
