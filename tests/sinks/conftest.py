"""Fixtures of the s3 sink tests: a client of moto's S3 server on 127.0.0.1 and a new bucket."""

from __future__ import annotations

import pytest

from tests.moto_standin import unique


@pytest.fixture
def s3(moto_server):
    return moto_server.client("s3")


@pytest.fixture
def bucket(s3) -> str:
    """A bucket of its own for the test (``lake-<hex>``)."""
    name = unique("lake")
    s3.create_bucket(Bucket=name)
    return name
