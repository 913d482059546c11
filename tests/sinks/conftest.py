"""The sink tests' AWS stand-in: moto's standalone server (see tests/moto_standin.py)."""

from tests.moto_standin import aws_env, moto_server  # noqa: F401 - fixtures
