"""Compile a topology into a ``Plan``: the graph checked, ordered and wired once.

Edges: the chain in listed order by default (each bolt without explicit inputs takes the default
stream of the component listed before it; sinks without explicit inputs take the last bolt's
default stream), plus explicit ``streams:`` edges. Error streams (``error``, ``invalid``, and any
stream left unwired) go to the dead-letter sinks that have no explicit inputs (or, when every
dead-letter sink is wired explicitly, to the first one listed).
"""

from __future__ import annotations

import graphlib
from collections import defaultdict
from dataclasses import dataclass, replace
from types import MappingProxyType

from squall.component import DEFAULT, ComponentConfig
from squall.errors import Problem, TopologyError
from squall.topology import registry
from squall.topology.model import Topology
from squall.topology.yamlsource import Locator, Path_, format_path


@dataclass(frozen=True)
class Node:
    """One bolt or sink in execution order; ``outputs`` maps stream → indices of receiving nodes."""

    index: int
    id: str
    kind: str  # "bolt" | "sink"
    config: ComponentConfig
    cls: type
    outputs: MappingProxyType
    streams: tuple[str, ...]
    dead_letter: bool = False


@dataclass(frozen=True)
class Plan:
    """The compiled graph: the only input to the engine, ``squall graph`` and deploy artifacts."""

    topology: Topology
    nodes: tuple[Node, ...]  # topological order
    entry: tuple[int, ...]  # nodes fed by the spout
    dead_letters: tuple[int, ...]  # sinks that take every unwired error stream

    @property
    def spout_id(self) -> str:
        return self.topology.spout.id

    def edges(self) -> list[tuple[str, str, str]]:
        """(from id, stream, to id) for every edge, spout included, for drawing."""
        out = [(self.spout_id, DEFAULT, self.nodes[i].id) for i in self.entry]
        for n in self.nodes:
            for stream, targets in n.outputs.items():
                out.extend((n.id, stream, self.nodes[t].id) for t in targets)
        return out

    def unwired(self) -> list[tuple[str, str]]:
        """(bolt id, stream) pairs that fall through to the default dead letter."""
        return [
            (n.id, s)
            for n in self.nodes
            if n.kind == "bolt"
            for s in n.streams
            if s not in n.outputs
        ]

    def _ids(self) -> dict[str, str]:
        """Drawing ids by position: component ids may hold any character."""
        return {self.spout_id: "n0", **{n.id: f"n{i + 1}" for i, n in enumerate(self.nodes)}}

    def mermaid(self) -> str:
        ids = self._ids()
        lines = [
            "flowchart LR",
            f'    n0(["{_label(self.spout_id)}: {_label(self.topology.spout.type)}"])',
        ]
        for n in self.nodes:
            shape = ('[("', '")]') if n.kind == "sink" else ('["', '"]')
            lines.append(
                f"    {ids[n.id]}{shape[0]}{_label(n.id)}: {_label(n.config.type)}{shape[1]}"
            )
        for src, stream, dst in self.edges():
            label = "" if stream == DEFAULT else f"|{_label(stream)}|"
            arrow = "-.->" if stream != DEFAULT else "-->"
            lines.append(f"    {ids[src]} {arrow}{label} {ids[dst]}")
        for src, stream in self.unwired():
            for d in self.dead_letters:
                lines.append(f"    {ids[src]} -.->|{_label(stream)}| {ids[self.nodes[d].id]}")
        return "\n".join(lines) + "\n"

    def dot(self) -> str:
        ids = self._ids()
        lines = [
            f'digraph "{_dot(self.topology.name)}" {{',
            "    rankdir=LR;",
            f'    n0 [shape=ellipse, label="{_dot(self.spout_id)}\\n{_dot(self.topology.spout.type)}"];',
        ]
        for n in self.nodes:
            shape = "cylinder" if n.kind == "sink" else "box"
            lines.append(
                f'    {ids[n.id]} [shape={shape}, label="{_dot(n.id)}\\n{_dot(n.config.type)}"];'
            )
        for src, stream, dst in self.edges():
            style = "" if stream == DEFAULT else f' [label="{_dot(stream)}", style=dashed]'
            lines.append(f"    {ids[src]} -> {ids[dst]}{style};")
        for src, stream in self.unwired():
            for d in self.dead_letters:
                lines.append(
                    f'    {ids[src]} -> {ids[self.nodes[d].id]} [label="{_dot(stream)}", style=dotted];'
                )
        lines.append("}")
        return "\n".join(lines) + "\n"


def _label(text: str) -> str:
    """Text inside a Mermaid label: quotes and pipes as HTML entities."""
    return text.replace('"', "#quot;").replace("|", "#124;")


def _dot(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def compile_plan(topo: Topology) -> Plan:
    """Check and order the graph; ``TopologyError`` names each problem's place in the YAML."""
    loc = topo.locator or Locator(topo.file)
    problems: list[Problem] = []

    # Component table: id -> (kind, config, path in the YAML)
    comps: dict[str, tuple[str, ComponentConfig, Path_]] = {}
    order: list[str] = []
    for kind, key, configs in (
        ("spout", "spout", [topo.spout]),
        ("bolt", "bolts", topo.bolts),
        ("sink", "sinks", topo.sinks),
    ):
        for i, cfg in enumerate(configs):
            path: Path_ = (key, "id") if kind == "spout" else (key, i, "id")
            if cfg.id in comps:
                first = comps[cfg.id][2]
                line, col = loc.where(first)
                where = f"line {line}, column {col}" if line else format_path(first)
                message = (
                    f"duplicate id '{cfg.id}' (first used by {format_path(first[:-1])} at {where})"
                )
                if line and loc.where(path) == (line, col):  # `- <<: *decode`: the id is merged
                    # from the first one's anchor: the entry that merged it is the place to fix
                    found = loc.problem(path[:-1], f"{message}: merged from it with '<<'")
                    problems.append(replace(found, path=format_path(path)))
                else:
                    problems.append(loc.problem(path, message))
                continue
            comps[cfg.id] = (kind, cfg, path)
            order.append(cfg.id)
    if problems:  # wiring a graph with ambiguous ids would only add confusing follow-on errors
        raise TopologyError(problems)
    classes = {
        cid: registry.resolve(k if k != "spout" else "spout", c.type)
        for cid, (k, c, _) in comps.items()
    }
    streams_of: dict[str, tuple[str, ...]] = {}
    for cid, (kind, cfg, _) in comps.items():
        if kind == "bolt":
            streams_of[cid] = tuple(dict.fromkeys(classes[cid].output_streams(cfg)))
        elif kind == "spout":
            streams_of[cid] = (DEFAULT,)
        else:
            streams_of[cid] = ()

    # Explicit edges
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    has_input: set[str] = set()
    for i, e in enumerate(topo.streams):
        base: Path_ = ("streams", i)
        ok = True
        if e.from_ not in comps:
            problems.append(loc.problem((*base, "from"), _unknown_id(e.from_, order, topo)))
            ok = False
        elif comps[e.from_][0] == "sink":
            problems.append(
                loc.problem((*base, "from"), f"'{e.from_}' is a sink: sinks have no output streams")
            )
            ok = False
        # `default` is every bolt's stream (Bolt's contract), even one a bolt never sends to (a
        # route whose `default` names another stream): an edge from it is a dead edge, not an
        # error — such topologies loaded before that route declared `default` only when used.
        elif e.stream not in streams_of[e.from_] and e.stream != DEFAULT:
            problems.append(
                loc.problem(
                    (*base, "stream"),
                    f"'{e.from_}' has no stream '{e.stream}' "
                    f"(streams: {', '.join(streams_of[e.from_])})",
                )
            )
            ok = False
        if e.to not in comps:
            problems.append(loc.problem((*base, "to"), _unknown_id(e.to, order, topo)))
            ok = False
        elif comps[e.to][0] == "spout":
            problems.append(loc.problem((*base, "to"), f"'{e.to}' is the spout: it takes no input"))
            ok = False
        if ok:
            if e.to in edges[(e.from_, e.stream)]:
                problems.append(loc.problem(base, f"duplicate edge {e.from_}.{e.stream} -> {e.to}"))
            edges[(e.from_, e.stream)].append(e.to)
            has_input.add(e.to)

    # The default chain
    bolts = [c.id for c in topo.bolts if c.id in comps and comps[c.id][0] == "bolt"]
    prev = topo.spout.id
    cut: dict[str, str] = {}  # bolt -> the component whose explicitly wired default it did not get
    for b in bolts:
        if b not in has_input and not edges.get((prev, DEFAULT)):
            edges[(prev, DEFAULT)].append(b)
        elif b not in has_input:
            cut[b] = prev
        prev = b
    last = prev
    sink_ids = [c.id for c in topo.sinks if c.id in comps and comps[c.id][0] == "sink"]
    all_dl = [s for s in sink_ids if classes[s].dead_letter]
    # Unwired error streams go to the dead-letter sinks without explicit inputs, or else to the first one.
    dl_ids = [s for s in all_dl if s not in has_input] or all_dl[:1]
    for s in sink_ids:
        if s not in has_input and not classes[s].dead_letter:
            edges[(last, DEFAULT)].append(s)

    # Reachability, inputs, cycles
    graph: dict[str, set[str]] = defaultdict(set)
    for (src, _stream), targets in edges.items():
        for t in targets:
            graph[t].add(src)
    fed = {t for targets in edges.values() for t in targets}
    for s in sink_ids:
        if s not in fed and s not in dl_ids:
            kind_, _, path = comps[s]
            problems.append(
                loc.problem(path[:-1], f"sink '{s}' has no input: wire it in 'streams:'")
            )
    try:
        topo_order = list(
            graphlib.TopologicalSorter({n: graph.get(n, set()) for n in order}).static_order()
        )
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        where = _edge_index(topo, cycle)
        path = ("streams", where) if where is not None else ("bolts",)
        problems.append(loc.problem(path, f"cycle: {' -> '.join(reversed(cycle))}"))
        raise TopologyError(problems) from None
    reachable = _reachable(topo.spout.id, edges)
    for b in bolts:
        if b not in reachable:
            why = (
                f": the default stream of '{cut[b]}' is wired in 'streams:', so it does not feed "
                f"the next bolt too; add {{from: {cut[b]}, to: {b}}}"
                if b in cut
                else ""
            )
            problems.append(
                loc.problem(comps[b][2][:-1], f"bolt '{b}' is unreachable from the spout{why}")
            )
    if problems:
        raise TopologyError(problems)

    index = {cid: i for i, cid in enumerate(c for c in topo_order if comps[c][0] != "spout")}
    nodes = []
    for cid in (c for c in topo_order if comps[c][0] != "spout"):
        kind, cfg, _ = comps[cid]
        outs = {
            stream: tuple(index[t] for t in edges[(cid, stream)])
            for stream in streams_of[cid]
            if edges.get((cid, stream))
        }
        nodes.append(
            Node(
                index[cid],
                cid,
                kind,
                cfg,
                classes[cid],
                MappingProxyType(outs),
                streams_of[cid],
                dead_letter=kind == "sink" and classes[cid].dead_letter,
            )
        )
    entry = tuple(index[t] for t in edges.get((topo.spout.id, DEFAULT), []))
    return Plan(topo, tuple(nodes), entry, tuple(index[d] for d in dl_ids))


def _unknown_id(name: str, known: list[str], topo: Topology) -> str:
    import difflib

    if name == "spout":  # `from: spout` where the spout has an id of its own
        return f"unknown component 'spout' (the spout's id is '{topo.spout.id}')"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"unknown component '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def _edge_index(topo: Topology, cycle: list[str]) -> int | None:
    pairs = set(zip(cycle[1:], cycle[:-1], strict=False)) | set(
        zip(cycle[:-1], cycle[1:], strict=False)
    )
    for i, e in enumerate(topo.streams):
        if (e.from_, e.to) in pairs:
            return i
    return None


def _reachable(start: str, edges: dict[tuple[str, str], list[str]]) -> set[str]:
    nexts: dict[str, list[str]] = defaultdict(list)
    for (src, _), targets in edges.items():
        nexts[src].extend(targets)
    seen, stack = {start}, [start]
    while stack:
        for t in nexts[stack.pop()]:
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return seen
