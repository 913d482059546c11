"""YAML that squall writes (SAM templates, a fleet's instance role, alerting rules)."""

from __future__ import annotations

from typing import Any

import yaml


class _PlainDumper(yaml.SafeDumper):
    """A safe dumper that writes an object used twice in full each time, never as ``&id001`` /
    ``*id001``: CloudFormation's parser (a template uploaded directly, or through the console)
    and many YAML tools outside PyYAML refuse anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any, **options: Any) -> str:
    """``data`` as YAML, safe and without anchors or aliases (templates, unit files, rules)."""
    return yaml.dump(data, Dumper=_PlainDumper, **options)
