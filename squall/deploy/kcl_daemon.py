"""Launch the KCL MultiLangDaemon for a topology: properties file, jar path, java command.

The daemon (Java, KCL 2.x) holds the shard leases in DynamoDB, balances them across every
worker of the fleet, and starts one ``python -m squall.deploy.kcl TOPOLOGY`` per leased shard.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from squall.errors import SquallError


@dataclass
class KclSettings:
    """What the properties file needs; ``extra`` is passed through verbatim (KCL property names)."""

    topology: Path
    stream: str
    application: str
    region: str = "us-east-1"
    initial_position: str = "TRIM_HORIZON"
    kinesis_endpoint: str | None = None
    dynamodb_endpoint: str | None = None
    worker_id: str | None = None
    metrics: bool = True
    python: str = sys.executable
    extra: dict[str, str] = field(default_factory=dict)

    def properties(self) -> str:
        executable = " ".join([self.python, "-m", "squall.deploy.kcl", str(self.topology.resolve()), self.stream])
        props = {
            "executableName": executable,
            "streamName": self.stream,
            "applicationName": self.application,
            "AWSCredentialsProvider": "DefaultAWSCredentialsProviderChain",
            "processingLanguage": "python/3",
            "initialPositionInStream": self.initial_position,
            "regionName": self.region,
        }
        if self.kinesis_endpoint:
            props["kinesisEndpoint"] = self.kinesis_endpoint
        if self.dynamodb_endpoint:
            props["dynamoDBEndpoint"] = self.dynamodb_endpoint
        if not self.metrics:
            props["metricsLevel"] = "NONE"
        if self.worker_id:
            props["workerId"] = self.worker_id
        props.update(self.extra)
        if " " in str(self.topology.resolve()) or " " in self.python:
            raise SquallError("the KCL splits executableName on spaces: use paths without spaces")
        return "".join(f"{k} = {v}\n" for k, v in props.items())


def jars_dir(explicit: str | Path | None = None) -> Path:
    """The KCL jars: an explicit directory, $SQUALL_KCL_JARS, or those installed with amazon_kclpy."""
    candidates = [explicit, os.environ.get("SQUALL_KCL_JARS")]
    try:
        import amazon_kclpy

        candidates.append(Path(amazon_kclpy.__file__).parent / "jars")
    except ImportError:
        pass
    for c in candidates:
        if c and Path(c).is_dir() and any(Path(c).glob("*.jar")):
            return Path(c)
    raise SquallError("KCL jars not found: pip install 'squall[kcl]' (amazon-kclpy), or set SQUALL_KCL_JARS")


def daemon_command(properties_file: Path, jars: Path, java: str | None = None) -> list[str]:
    java = java or shutil.which("java") or "java"
    return [java, "-cp", f"{jars}/*", "software.amazon.kinesis.multilang.MultiLangDaemon",
            "--properties-file", str(properties_file)]


def describe(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
