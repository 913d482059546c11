"""The README's "Writing a bolt" and "Testing topologies" code, run as written: the bolt saved as
`mypackage/bolts.py`, the test's function called."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.conftest import ROOT


def python_block(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, re.S)
    assert len(blocks) == 1, section
    return blocks[0]


def test_the_readme_bolt_and_its_test_run_as_written(tmp_path: Path, monkeypatch):
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bolts.py").write_text(python_block("Writing a bolt"))
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {}
    try:
        exec(compile(python_block("Testing topologies"), "README.md", "exec"), namespace)
        tests = [f for name, f in namespace.items() if name.startswith("test_")]
        assert tests
        for test in tests:
            test()
    finally:
        for name in [m for m in sys.modules if m == "mypackage" or m.startswith("mypackage.")]:
            del sys.modules[name]


def test_the_readme_says_how_to_ask_the_faulty_components_for_faults():
    """The README offers FaultyBolt / FaultySink "for injecting record failures, transient errors
    and partial write failures": usable only when it says how, with their options and the payload
    keys that trigger each fault."""
    from squall.testing import FaultyBolt, FaultySink

    text = (ROOT / "README.md").read_text().split("\n## Testing topologies\n", 1)[1]
    section = text.split("\n## ", 1)[0]
    for component in (FaultyBolt, FaultySink):
        own = set(component.Config.model_fields) - set(component.__mro__[1].Config.model_fields)
        keys = set(re.findall(r'``\{?"(\w+)"', component.__doc__ or ""))
        assert keys, component.__name__
        for name in own | keys:
            assert f"`{name}" in section or f'"{name}"' in section, (component.__name__, name)


def test_the_readme_says_what_a_record_bolt_returning_none_does():
    """``process_event(event) -> stream | None`` alone let a new user's first bolt (a price set
    in place, no ``return``) drop every event, exit 0, write nothing: the README says that
    ``None`` drops and that ``"default"`` passes an event on."""
    section = (ROOT / "README.md").read_text().split("\n## Writing a bolt\n", 1)[1]
    section = " ".join(section.split("\n## ", 1)[0].split())
    assert 'return `"default"`** to pass it on' in section
    assert "`None` drops it — counted as *filtered*" in section
    assert "ends without a `return` drops every event" in section
