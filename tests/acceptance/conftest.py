"""The Kinesis stand-ins of the Kinesis tests, for the acceptance suite's Kinesis spout trials."""

from tests.kinesis.conftest import (  # noqa: F401 - fixtures
    aws_dummy_env,
    kinesis,
    kinesis_mock,
    make_stream,
    node_modules,
)
