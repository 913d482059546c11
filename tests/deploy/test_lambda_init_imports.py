"""What a Lambda init loads when its topology has no AWS client (issue 16: init ≤ 250 ms).

The example consumer (SQLite warehouse and state, no AWS component) used to import botocore's
HTTP stack at init — ``botocore.httpsession`` with urllib3, ``http.client`` and ``ssl``, 13 % of
the init's instructions — only to find out whether botocore reads a timeout per request; and ``squall.aws`` with
``botocore.exceptions`` (~2 % of the init's instructions) for ``squall.secrets``, which needs
them only to read a ``${ssm:…}`` or ``${secretsmanager:…}`` reference. And ``hashlib``, whose
import loads OpenSSL's libcrypto (~3.5 MB of RSS) where the init needs only BLAKE2b and a short
SHA-256 (``squall.digests``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from squall import aws

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from squall.deploy.lambda_consumer import make_handler
make_handler(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m in sys.argv[2:])))
"""

#: Modules only an AWS client, a secret reference (or an HTTP component) needs.
AWS_ONLY = (
    "botocore.httpsession",
    "urllib3",
    "http.client",
    "ssl",
    "boto3",
    "botocore.exceptions",
    "squall.aws",
)


def test_the_example_consumer_starts_without_aws_modules(tmp_path: Path):
    assert run_init(tmp_path, AWS_ONLY) == []


#: ``import hashlib`` loads ``_hashlib`` and libcrypto; the init's digests are CPython's own.
OPENSSL_DIGESTS = ("hashlib", "_hashlib")


def run_init(tmp_path: Path, modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` loaded after the example consumer's init, in a fresh process."""
    env = {
        **os.environ,
        "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "STATE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "AWS_REGION": "us-east-1",
    }
    topology = ROOT / "examples" / "pistats" / "topology.yaml"
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(topology), *modules],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_example_consumer_starts_without_openssl_digests(tmp_path: Path):
    assert run_init(tmp_path, OPENSSL_DIGESTS) == []


def test_per_request_read_timeout_is_found_when_first_read():
    """Found from botocore at the first read (and kept), as it was at import."""
    from botocore.httpsession import URLLib3Session

    assert aws.PER_REQUEST_READ_TIMEOUT is hasattr(URLLib3Session, "_get_request_timeout")
    assert "PER_REQUEST_READ_TIMEOUT" in vars(aws)


def test_an_unknown_attribute_of_the_module_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NO_SUCH_SETTING'"):
        aws.NO_SUCH_SETTING  # noqa: B018
    assert not hasattr(aws, "NO_SUCH_SETTING")
