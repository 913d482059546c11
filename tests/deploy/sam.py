"""Offline checks of SAM templates: aws-sam-translator (SAM → CloudFormation), then cfn-lint."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


class _NoManagedPolicies:
    """squall's templates name no AWS managed policy: the translator never needs to look one up."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation template the SAM transform makes (local code paths stand in as s3:// URIs, as `sam
    package` would upload them); raises the translator's errors."""
    from samtranslator.translator.transform import transform

    doc = copy.deepcopy(template)
    for resource in doc["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://deploy-bucket/{props[key].lstrip('./')}"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(doc, {}, _NoManagedPolicies())


def cfn_lint(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(
        "cfn-lint"
    )  # the console script installed beside this Python
    return subprocess.run([str(exe), str(path)], capture_output=True, text=True, timeout=300)
