"""Build a Lambda deployment package (zip) for a topology: squall, its dependencies, your code.

    squall package topology.yaml --handler consumer -o build/consumer.zip

Dependencies are installed for Lambda's platform (manylinux wheels for the chosen architecture
and Python version), so the package builds on any machine with network access to PyPI. The
zip holds ``squall_lambda.py`` (the handler: ``squall_lambda.handler``) and the topology's
folder under ``topology/`` (less the files that hold records: the spout's input, what a local
run's sinks wrote; see ``topology_files.left_out``), which is put on ``sys.path`` as it is when you run the topology
locally: a bolt written beside the topology (``type: kiosk_lookup:LookupBolt``) imports in
Lambda too. Paths in the topology resolve there, except files written at run time, which must
go under ``/tmp`` (the only writable place in Lambda).

What goes in is what the topology needs: ``--requirements FILE`` and ``--with PACKAGE`` add
dependencies; plugin packages the topology names (entry-point types, or ``module:Class`` of an
installed distribution) are included automatically, built from their local source when they
were installed from a folder. The bundled GeoLite2 database (56 MB) goes in only when a geo bolt
uses it; squall's dependencies that only some topologies use (SQLAlchemy, redis-py, pyarrow,
ua-parser, the MaxMind reader, the CLI's rich and click: ``dependencies.OPTIONAL``) only when a
component or resource of the topology declares them or you ask for them (``--with``); tests,
caches, console scripts and bytecode for other Pythons never do. Bytecode for
the target Python is compiled in (Lambda's code folder is read-only, so without it every cold
start compiles every module again). ``layer=`` puts the dependencies in a separate Lambda layer
zip, so a change to the topology re-uploads a few kilobytes.

Size (~630 lines): one build, step by step (install for the runtime's platform, prune, compile,
zip reproducibly, check the limits); the steps share the build's folders and constants; squall's
own wheel, from a checkout or packed again from its installed files, is shared with the fleet.
"""

from __future__ import annotations

import compileall
import fnmatch
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from squall.bolts.schema import SchemaConfig, write_checked
from squall.deploy.dependencies import (
    DISTRIBUTION_OF,
    EXTRA_OF,
    OPTIONAL,
    _imports,
    local_code,
    needed_packages,
    prune_unused,
    requirement_lines,
)
from squall.deploy.lambda_paths import as_deployed, lambda_path_warnings
from squall.deploy.topology_files import LeftOut, check_folder, copy_folder, left_out
from squall.errors import SquallError
from squall.topology.model import Topology

HANDLERS = {
    "consumer": "squall.deploy.lambda_consumer",
    "producer": "squall.deploy.lambda_producer",
}
#: Lambda's architectures and their machine names in wheel tags.
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
#: The glibc of Lambda's Python runtimes: Amazon Linux 2 up to python3.11 (glibc 2.26), Amazon
#: Linux 2023 from python3.12 (glibc 2.34).
LAMBDA_GLIBC = {(3, 11): 26, (3, 12): 34}


def platforms(python: str, arch: str) -> list[str]:
    """pip's ``--platform`` values for a runtime: every manylinux up to its glibc (pip expands
    ``manylinux2014`` to the older ones, but takes a ``manylinux_2_28`` alone)."""
    version = tuple(int(part) for part in python.split(".")[:2])
    glibc = LAMBDA_GLIBC[(3, 11)] if version <= (3, 11) else LAMBDA_GLIBC[(3, 12)]
    machine = MACHINES[arch]
    return [f"manylinux_2_{minor}_{machine}" for minor in range(glibc, 16, -1)] + [
        f"manylinux2014_{machine}"
    ]


#: Skipped in dependencies: never imported at run time (console scripts, type stubs, test suites).
DEPENDENCY_IGNORED = (
    "bin/*",
    "*.pyi",
    "*/tests/*",
    "*/__pycache__/*",
    "*.pyc",
    "*.dist-info/RECORD",
    "*.dist-info/direct_url.json",  # where pip found it: the build's temporary folder
)
#: The 56 MB GeoLite2-City file of maxminddb-geolite2, included only when a geo bolt uses it.
BUNDLED_GEOLITE = "_maxminddb_geolite2/*.mmdb"
#: Console rendering only (rich's syntax highlighting and Markdown): the CLI uses them, Lambda never does.
CONSOLE_ONLY = ("pygments/*", "markdown_it/*", "mdurl/*")
#: AWS service models botocore needs for squall itself (Kinesis I/O, DynamoDB checkpoints, assumed roles).
AWS_SERVICES = frozenset({"kinesis", "dynamodb", "sts"})
#: Lambda's limit on the unzipped size of a function and its layers.
UNZIPPED_LIMIT = 250 * 1024 * 1024
#: Larger zips cannot be uploaded directly: they go through S3.
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
#: Where Lambda unpacks the function's zip, and a layer's ``python/`` folder.
TASK_ROOT, LAYER_ROOT = "/var/task", "/opt/python"
#: Every entry's timestamp: the same input gives the same zip, byte for byte, so a deploy of an
#: unchanged topology changes nothing (``sam deploy`` compares the zip's digest).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

HANDLER_SOURCE = '''"""Lambda entry point generated by `squall package`: handler = squall_lambda.handler."""
import gc
import os
import sys

TOPOLOGY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "topology")
sys.path.append(TOPOLOGY_DIR)  # modules beside the topology import as they do locally

gc.disable()  # during init only, imports included: see squall.deploy.lambda_consumer.collector_paused
try:
    from {module} import make_handler  # noqa: E402

    handler = make_handler(os.path.join(TOPOLOGY_DIR, {name!r}){kwargs})
finally:
    gc.enable()
'''


def handler_source(handler: str, name: str, *, context_key: str = "request") -> str:
    """``squall_lambda.py`` for ``handler`` and the topology file ``name``; a producer's
    ``context_key`` other than ``request`` is passed to its ``make_handler``."""
    kwargs = f", context_key={context_key!r}" if context_key != "request" else ""
    return HANDLER_SOURCE.format(module=HANDLERS[handler], name=name, kwargs=kwargs)


@dataclass
class ZipReport:
    """One zip written: its sizes and what takes the most room in it (zipped bytes per top-level entry)."""

    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    largest: list[tuple[str, int]] = field(default_factory=list)
    largest_unzipped: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class PackageReport:
    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    handler: str = "squall_lambda.handler"
    largest: list[tuple[str, int]] = field(default_factory=list)
    layer: ZipReport | None = None
    geolite_included: bool = False
    distributions: list[str] = field(default_factory=list)
    compiled: bool = False
    #: Files of the topology's folder not shipped because they hold records (spout input, dead letters).
    left_out: list[LeftOut] = field(default_factory=list)
    #: What the function would stop on at init (a resource's driver not in the package).
    warnings: list[str] = field(default_factory=list)
    #: squall's optional dependencies the topology does not use, left out (``OPTIONAL``).
    left_out_packages: list[str] = field(default_factory=list)


def project_root() -> Path | None:
    """The source checkout squall runs from, when it does (pyproject.toml next to the package)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "squall").is_dir() else None


#: What building squall's wheel reads from a checkout.
SOURCE_FILES = ("pyproject.toml", "setup.cfg", "README.md")


def source_copy(root: Path, dest: Path) -> Path:
    """The checkout's package sources alone, copied to ``dest`` for building the wheel there:
    setuptools reuses a checkout's ``build/`` folder, so a module deleted from the source since
    an earlier build would still go into the zip (bytecode caches are left out too)."""
    dest.mkdir(parents=True)
    for name in SOURCE_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    shutil.copytree(
        root / "squall", dest / "squall", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return dest


#: What an installed distribution holds that its wheel did not (the installer's own files).
_INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})


def installed_wheel(folder: Path) -> Path | None:
    """squall installed without a checkout (a wheel, ``pip install .``) is on no index either:
    its installed files (its ``RECORD``), packed again as its wheel in ``folder``. None when they
    are not all on disk (a zipapp) or are not the squall imported here."""
    import base64
    import hashlib

    import squall

    try:
        dist = metadata.distribution("squall")
    except metadata.PackageNotFoundError:
        return None
    init = Path(str(dist.locate_file("squall/__init__.py")))
    if not init.is_file() or init.resolve() != Path(squall.__file__).resolve():
        return None
    infos = {f.parts[0] for f in dist.files or () if f.parts[0].endswith(".dist-info")}
    if len(infos) != 1:
        return None
    [info] = infos
    files = [
        f
        for f in dist.files or ()
        if (f.parts[0] == "squall" and "__pycache__" not in f.parts and f.suffix != ".pyc")
        or (f.parts[0] == info and f.name not in _INSTALLER_FILES)
    ]
    paths = {f.as_posix(): Path(str(dist.locate_file(f))) for f in files}
    if not all(p.is_file() for p in paths.values()) or f"{info}/WHEEL" not in paths:
        return None
    tags = [
        line.split(":", 1)[1].strip()
        for line in paths[f"{info}/WHEEL"].read_text().splitlines()
        if line.startswith("Tag:")
    ]
    name = f"squall-{dist.version}-{tags[0] if tags else 'py3-none-any'}.whl"
    record = []
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / name, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, path in sorted(paths.items()):
            data = path.read_bytes()
            zf.writestr(zipfile.ZipInfo(arcname, ZIP_EPOCH), data, zipfile.ZIP_DEFLATED)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{arcname},sha256={digest.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(
            zipfile.ZipInfo(f"{info}/RECORD", ZIP_EPOCH),
            "\n".join(record) + "\n",
            zipfile.ZIP_DEFLATED,
        )
    return folder / name


def _pip(*args: str) -> None:
    """Run pip; its error, and what a version conflict is caused by (pip prints that to stdout,
    and not at all with ``-q``: no caller passes it), make the message."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        _, found, cause = result.stdout.partition("The conflict is caused by:")
        cause = found + cause.split("\n\n", 1)[0] if found else ""
        raise SquallError(
            f"pip failed: {' '.join(args[:2])}…\n{result.stderr.strip()[-2000:]}"
            + (f"\n{cause[:2000]}" if cause else "")
        )


def uses_bundled_geolite(topology: Topology, text: str = "") -> bool:
    """True when a bolt declares the bundled GeoLite2-City (``packages``: a geo bolt, or a
    subclass of yours, with no ``database:`` or an empty one) with its options as written or
    as variables may give them when deployed (``dependencies.variable_configs``), or when a
    bolt's ``type`` is a variable (``text``: the topology file's, for a topology built
    without a locator)."""
    from squall.deploy.dependencies import _empty_paths, _variable_paths, variable_configs
    from squall.topology import registry

    variables = _variable_paths(topology, text)
    empty = _empty_paths(topology)
    for i, bolt in enumerate(topology.bolts):
        if ("bolts", i, "type") in variables:  # any bolt when deployed, a geo one too
            return True
        cls = registry.resolve("bolt", bolt.type)
        for variant in variable_configs(bolt, ("bolts", i), variables, empty):
            if "_maxminddb_geolite2" in cls.packages(variant):
                return True
    return False


def _distribution_requirement(dist: metadata.Distribution) -> str:
    """How pip gets the same distribution again: its local source folder or archive, else name==version."""
    text = dist.read_text("direct_url.json")
    if text:
        info = json.loads(text)
        url: str = info.get("url", "")
        if url.startswith("file://") and "vcs_info" not in info:
            return url2pathname(urlsplit(url).path)  # file:///my%20plugins → /my plugins
    return f"{dist.metadata['Name']}=={dist.version}"


def plugin_distributions(topology: Topology) -> list[metadata.Distribution]:
    """Installed distributions (other than squall) that provide the topology's plugin or ``module:Class`` types."""
    from squall.topology.registry import ENTRY_POINT_GROUPS

    by_module = metadata.packages_distributions()
    found: dict[str, metadata.Distribution] = {}
    components = [
        ("spout", topology.spout),
        *(("bolt", b) for b in topology.bolts),
        *(("sink", s) for s in topology.sinks),
    ]
    for kind, cfg in components:
        names: list[str] = []
        if ":" in cfg.type:
            names = by_module.get(cfg.type.split(":", 1)[0].split(".", 1)[0], [])
        else:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUPS[kind], name=cfg.type):
                if ep.dist is not None:
                    names.append(ep.dist.name)
        for name in names:
            if name.lower() != "squall":
                found.setdefault(name.lower(), metadata.distribution(name))
    return list(found.values())


def _ignored(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def _prune_botocore(root: Path, keep: frozenset[str]) -> None:
    """Drop the models of AWS services nothing calls: ~15 of the ~17 MiB botocore adds to a zip."""
    data = root / "botocore" / "data"
    if not data.is_dir():
        return
    for service in data.iterdir():
        if service.is_dir() and service.name not in keep:
            shutil.rmtree(service)


def aws_services(topology: Topology, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """botocore models to keep: squall's own, those the components' declared actions, the secret
    references and the Lambda trigger's name (an S3 trigger's handler reads the objects), and
    ``extra``."""
    from squall.deploy.template import component_permissions, reference_permissions
    from squall.deploy.triggers import trigger_permissions

    perms = component_permissions(topology) + trigger_permissions(topology)
    if Path(topology.file).is_file():  # ssm, secretsmanager: the function reads its references
        perms += reference_permissions(Path(topology.file).read_text(encoding="utf-8"))
    declared = {a.split(":", 1)[0] for p in perms for a in p.actions}
    return AWS_SERVICES | declared | set(extra)


def _prune(root: Path, patterns: tuple[str, ...]) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and _ignored(rel, patterns):
            path.unlink()
        elif path.is_dir() and (path.name in ("__pycache__", "tests") or rel == "bin"):
            shutil.rmtree(path, ignore_errors=True)


def _compile(root: Path, installed_at: str, *, checked: bool = False) -> None:
    """Bytecode valid whatever timestamps the zip restores (they are 2 s coarse): "unchecked
    hash" ones, which Python never re-checks against the sources, or with ``checked`` ones that
    it does (the topology's own code: edited in Lambda's console, it must run as edited).

    Each file's recorded path is where Lambda puts it (``installed_at``), not this build's
    temporary folder, whose random name would make every build's bytes different."""
    # A file that does not compile (a template shipped as .py) is left as source: importing it
    # would fail with or without bytecode, and most never are imported.
    compileall.compile_dir(
        str(root),
        ddir=installed_at,
        quiet=2,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH
        if checked
        else py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def _write_zip(output: Path, sources: list[tuple[Path, str]]) -> ZipReport:
    """Zip each ``(folder, prefix)``; sizes per top-level entry.

    Reproducible: sorted entries, one timestamp, and modes Lambda can read whatever the files
    had here (it runs the code as another user: a file only its owner may read, 0600, would
    fail to import): 0644, or 0755 for a file executable here."""
    output.parent.mkdir(parents=True, exist_ok=True)
    unzipped = 0
    groups: dict[str, int] = defaultdict(int)
    groups_unzipped: dict[str, int] = defaultdict(int)
    # zlib's default level 6: level 9 took 2.5x as long here for a zip 0.5 % smaller.
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for folder, prefix in sources:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                rel = path.relative_to(folder).as_posix()
                info = zipfile.ZipInfo(prefix + rel, ZIP_EPOCH)
                info.create_system = 3  # Unix: Lambda reads the modes below
                executable = path.stat().st_mode & 0o111
                info.external_attr = (0o100755 if executable else 0o100644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.file_size = path.stat().st_size
                with path.open("rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                unzipped += info.file_size
                top = rel.split("/", 1)[0]
                if top.endswith(".dist-info"):
                    top = "*.dist-info"
                elif top.endswith(".libs"):  # auditwheel's vendored shared libraries
                    top = (
                        top.removesuffix(".libs").rstrip("_").lower().replace("-", "_") + " (.libs)"
                    )
                groups[top] += info.compress_size
                groups_unzipped[top] += info.file_size
    largest = sorted(groups.items(), key=lambda kv: -kv[1])[:6]
    largest_unzipped = sorted(groups_unzipped.items(), key=lambda kv: -kv[1])[:6]
    return ZipReport(output, output.stat().st_size, unzipped, largest, largest_unzipped)


def build(
    topology: Path,
    *,
    handler: str,
    output: Path,
    extras: tuple[str, ...] = (),
    python: str = "3.11",
    arch: str = "x86_64",
    requirement: str | None = None,
    requirements_file: Path | None = None,
    with_packages: tuple[str, ...] = (),
    plugins: tuple[str, ...] = (),
    layer: Path | None = None,
    compile_bytecode: bool | None = None,
    aws_service: tuple[str, ...] = (),
    context_key: str = "request",
) -> PackageReport:
    """Build the zip (and the layer zip when ``layer`` is given).

    ``requirement`` overrides what is installed as squall (default: this checkout's wheel, else
    the installed squall's files packed again as its wheel, else this version from an index); ``plugins`` names installed distributions to include besides those the
    topology's types come from; ``compile_bytecode`` defaults to "when this Python is the target's";
    ``aws_service`` names botocore service models to keep besides those the components declare
    (``all`` keeps every one).
    """
    from squall import __version__
    from squall.topology.loader import load
    from squall.topology.references import placeholder

    # refuse an invalid topology before downloading anything; its secret references stand for
    # placeholders (the function reads them at init: the packager needs no right to them)
    topo = load(topology, secrets=placeholder)
    check_folder(topo, topology.read_text(encoding="utf-8"))  # and one that would not ship whole
    if handler not in HANDLERS:
        raise SquallError(f"--handler must be one of {', '.join(HANDLERS)}")
    if arch not in MACHINES:
        raise SquallError(f"--arch must be one of {', '.join(MACHINES)}")
    if not re.fullmatch(r"3\.\d+", python):
        raise SquallError(f"--python {python}: give a Lambda runtime's version, such as 3.12")
    if requirements_file is not None and not requirements_file.is_file():
        raise SquallError(f"--requirements {requirements_file}: no such file")
    same_python = f"{sys.version_info[0]}.{sys.version_info[1]}" == python
    if compile_bytecode is None:
        compile_bytecode = same_python
    elif compile_bytecode and not same_python:
        raise SquallError(
            f"bytecode for python{python} needs that Python: run squall package with it"
        )
    dists = plugin_distributions(topo)
    for name in plugins:
        try:
            d = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SquallError(f"--plugin {name}: no installed distribution of that name") from None
        if all(x.metadata["Name"].lower() != d.metadata["Name"].lower() for x in dists):
            dists.append(d)
    own_code = local_code(topo, topology.resolve().parent)
    # a geo bolt that opens the bundled file, or code of yours that does (``bundled_database``)
    geolite = uses_bundled_geolite(topo, topology.read_text(encoding="utf-8"))
    geolite = geolite or "_maxminddb_geolite2" in _imports(own_code)
    suffix = f"[{','.join(extras)}]" if extras else ""
    with tempfile.TemporaryDirectory(prefix="squall-package-") as tmp:
        work = Path(tmp)
        deps, code, wheels = work / "deps", work / "code", work / "wheels"
        code.mkdir()
        if requirement is None:
            root = project_root()
            if root is not None:  # a checkout: build squall's own wheel first (pure Python)
                source = source_copy(root, work / "source")
                _pip("wheel", "--no-deps", "-w", str(wheels), str(source))
                [wheel] = wheels.glob("squall-*.whl")
                requirement = f"{wheel}{suffix}"
            else:  # installed from a wheel: its files packed again (squall is on no index)
                wheel = installed_wheel(wheels)
                requirement = f"{wheel}{suffix}" if wheel else f"squall{suffix}=={__version__}"
        reqs = [requirement, *with_packages, *(_distribution_requirement(d) for d in dists)]
        if requirements_file is not None:
            reqs += ["-r", str(requirements_file)]
        # Some dependencies ship only as source (maxminddb-geolite2): build wheels of everything here
        # first — pure-Python ones are platform-independent — then install for Lambda's platform,
        # which takes those wheels and downloads the native ones built for the target.
        _pip("wheel", "-w", str(wheels), *reqs)
        _pip(
            "install",
            "--target",
            str(deps),
            *(arg for platform in platforms(python, arch) for arg in ("--platform", platform)),
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--only-binary=:all:",
            "--find-links",
            str(wheels),
            "--upgrade",
            *reqs,
        )
        asked = [*with_packages, *(_distribution_requirement(d) for d in dists)]
        if requirements_file is not None:
            asked += requirement_lines(requirements_file)
        needs = needed_packages(topo, topology.read_text(encoding="utf-8"))
        left_out_packages = prune_unused(
            deps,
            needs,
            extras=set(extras),
            asked=[a for a in asked if a and not a.startswith(("#", "-"))],
            code=own_code,
        )
        warnings = missing_drivers(topo, deps, needs, topology.read_text(encoding="utf-8"))
        # what the function writes where Lambda cannot keep it (deployed, every init stops)
        warnings += lambda_path_warnings(
            as_deployed(topology, topo), topology.read_text(encoding="utf-8")
        )
        _prune(deps, DEPENDENCY_IGNORED + CONSOLE_ONLY + (() if geolite else (BUNDLED_GEOLITE,)))
        if "all" not in aws_service:
            _prune_botocore(deps, aws_services(topo, aws_service))
        text = topology.read_text(encoding="utf-8")
        records = left_out(topo, text)
        folder = topology.resolve().parent
        copy_folder(folder, code / "topology", {os.path.normpath(folder / r.path) for r in records})
        # The schemas were checked by load() above: the function's init need not check them again.
        write_checked(
            [b.schema_ for b in topo.bolts if isinstance(b, SchemaConfig)], code / "topology"
        )
        (code / "squall_lambda.py").write_text(
            handler_source(handler, topology.resolve().name, context_key=context_key)
        )
        if compile_bytecode:
            _compile(deps, TASK_ROOT if layer is None else LAYER_ROOT)
            _compile(code, TASK_ROOT, checked=True)  # a few files: hashed at import, ~µs
        if layer is not None:
            layer_report = _write_zip(
                layer, [(deps, "python/")]
            )  # Lambda puts /opt/python on sys.path
            report = _write_zip(output, [(code, "")])
        else:
            layer_report = None
            report = _write_zip(output, [(deps, ""), (code, "")])
    total = report.unzipped_bytes + (layer_report.unzipped_bytes if layer_report else 0)
    if total > UNZIPPED_LIMIT:  # Lambda would refuse it: no zip is left to deploy by mistake
        zips = [z for z in (report, layer_report) if z is not None]
        for z in zips:
            z.path.unlink()
        parts = sorted((p for z in zips for p in z.largest_unzipped), key=lambda kv: -kv[1])
        raise SquallError(
            f"{output}: {total / 2**20:.0f} MiB unzipped exceeds Lambda's 250 MiB limit "
            f"(function and layers together); largest unzipped: {describe_sizes(parts[:6], total)}. "
            "Leave out what the function does not need (large files in the topology's folder, "
            "dependencies), or give a geo bolt a database: outside the package"
        )
    return PackageReport(
        output,
        report.zipped_bytes,
        report.unzipped_bytes,
        largest=report.largest,
        layer=layer_report,
        geolite_included=geolite,
        distributions=[d.metadata["Name"] for d in dists],
        compiled=compile_bytecode,
        left_out=records,
        warnings=warnings,
        left_out_packages=left_out_packages,
    )


def missing_drivers(
    topology: Topology, deps: Path, needs: frozenset[str] = frozenset(), text: str = ""
) -> list[str]:
    """What the function imports that the dependencies installed in ``deps`` do not hold: a
    resource's driver — PostgreSQL's psycopg2 comes with the ``postgres`` extra only (Redis's
    redis-py is squall's own dependency), for a PostgreSQL URL, or one from a variable or a
    secret that may be PostgreSQL when deployed (unless only options taking Redis name it) —
    and a module of ``needs`` (``dependencies.needed_packages``: what the components declare,
    such as an ``s3`` sink's Parquet writer pyarrow, the ``s3`` extra's). Such a function stops
    at every init (or batch). ``text``: the topology file's, for one built without a locator."""
    from squall.deploy.dependencies import _variable_paths, declared_by, resource_uses

    out = []
    variables = _variable_paths(topology, text) if topology.locator or text else set()
    uses = resource_uses(topology)
    for name, res in topology.resources.items():
        if (deps / "psycopg2").is_dir():
            break
        if res.scheme == "postgresql":
            out.append(
                f"resource '{name}' is PostgreSQL, but the package holds no psycopg2 (its "
                "driver): the function cannot open it; add --extras postgres (or --with "
                "psycopg2-binary)"
            )
        elif any(p[:2] == ("resources", name) for p in variables) and "redis" not in uses[name]:
            out.append(
                f"resource '{name}' takes its URL from a variable or a secret, and the package "
                "holds no psycopg2: deployed with a PostgreSQL URL, the function could not open "
                "it; if it may be one, add --extras postgres (or --with psycopg2-binary)"
            )
    who = declared_by(topology, text)
    for name in sorted(needs):
        where = deps.joinpath(*name.split("."))  # google.auth: not protobuf's google/
        if where.is_dir() or any(where.parent.glob(f"{where.name}.*")):
            continue
        dist = OPTIONAL.get(name, (DISTRIBUTION_OF.get(name, name),))[0]
        extra = EXTRA_OF.get(name)
        fix = f"--extras {extra} (or --with {dist})" if extra else f"--with {dist}"
        users = who.get(name) or ["the topology's components"]
        out.append(
            f"{', '.join(users)} import{'s' if len(users) == 1 and name in who else ''} "
            f"{name}, but the package holds none: the function would stop with ImportError; "
            f"add {fix}"
        )
    return out


def describe_sizes(largest: list[tuple[str, int]], total: int) -> str:
    """``botocore 8.1 MiB (40%), sqlalchemy 3.2 MiB (16%), …`` — what dominates a zip."""
    return ", ".join(
        f"{name} {size / 2**20:.1f} MiB ({100 * size / max(total, 1):.0f}%)"
        for name, size in largest
    )
