"""``schema`` bolt: JSON Schema validation; failures go to the ``invalid`` stream with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import orjson
from pydantic import Field, ValidationInfo, field_validator

from squall.bolts.base import INVALID, Bolt, Output
from squall.component import ComponentConfig
from squall.event import Event


class SchemaConfig(ComponentConfig):
    schema_: str | dict[str, Any] = Field(
        alias="schema", description="A JSON Schema: a path to a .json/.yaml file (relative to the topology) or inline.")

    model_config = {**ComponentConfig.model_config, "populate_by_name": True}

    @field_validator("schema_")
    @classmethod
    def _load(cls, v: str | dict, info: ValidationInfo) -> dict[str, Any]:
        if isinstance(v, str):
            base = (info.context or {}).get("base_dir") or Path.cwd()
            path = Path(v) if Path(v).is_absolute() else Path(base) / v
            try:
                text = path.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read schema file '{v}': {exc.strerror}") from None
            try:
                if path.suffix in (".yaml", ".yml"):
                    import yaml

                    v = yaml.safe_load(text)
                else:
                    v = orjson.loads(text)
            except Exception as exc:
                raise ValueError(f"schema file '{v}' is not valid: {exc}") from None
        if not isinstance(v, dict):
            raise ValueError("a JSON Schema must be an object")
        validator = jsonschema.validators.validator_for(v)
        try:
            validator.check_schema(v)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"invalid JSON Schema: {exc.message}") from None
        return v


class SchemaBolt(Bolt):
    """Validate payloads against a JSON Schema; invalid events go to ``invalid`` with the first error."""

    Config = SchemaConfig
    summary = "Validate payloads against a JSON Schema; failures go to the 'invalid' stream."
    streams = (INVALID,)

    def __init__(self, config: SchemaConfig, context):
        super().__init__(config, context)
        cls = jsonschema.validators.validator_for(config.schema_)
        self._validator = cls(config.schema_, format_checker=cls.FORMAT_CHECKER)

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        validator = self._validator
        for ev in batch:
            error = jsonschema.exceptions.best_match(validator.iter_errors(ev.value))
            if error is None:
                out.emit(ev)
            else:
                where = error.json_path if error.absolute_path else "$"
                out.fail(ev, f"schema: {where}: {error.message}", INVALID)
        return out
