"""Every field a config file may set says what it does.

The config reference (``docs/reference/config.md``) is generated from these descriptions, and
``hookstream schemas export`` puts them in ``config.schema.json`` for editors: a field added
without one would land as an empty cell. The models are found two ways, by scanning the config
modules and by walking the types from the root, so a model defined elsewhere is held to it too.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import typing
from typing import Any

from pydantic import BaseModel

import schemas
from schemas.config import HookstreamConfig
from schemas.config_base import ConfigModel


def _models_in(tp: Any) -> set[type[BaseModel]]:
    """The models a field's type holds, however nested (lists, maps, unions, Annotated)."""
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return {tp}
    return {m for arg in typing.get_args(tp) for m in _models_in(arg)}


def _reachable(root: type[BaseModel]) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model in found:
            continue
        found.add(model)
        for field in model.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return found


def _config_models() -> set[type[BaseModel]]:
    modules: list[types.ModuleType] = [
        importlib.import_module(f"schemas.{info.name}")
        for info in pkgutil.iter_modules(schemas.__path__)
        if info.name == "config" or info.name.startswith("config_")
    ]
    declared = {
        value
        for module in modules
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
        and value is not ConfigModel
    }
    return declared | _reachable(HookstreamConfig)


def _settable(model: type[BaseModel]) -> dict[str, Any]:
    """Fields a file may set: secrets resolved from ``*_env`` variables are excluded (the file
    may not hold them) and are not described to the reader."""
    return {name: f for name, f in model.model_fields.items() if not f.exclude}


def test_the_scan_finds_every_block_of_the_file() -> None:
    names = {m.__name__ for m in _config_models()}
    # One model of each config module, and the sink kinds behind the discriminated union.
    assert {"HookstreamConfig", "SourceConfig", "ProviderConfig", "FlowConfig"} <= names
    assert {"HttpSinkConfig", "SlackSinkConfig", "PostgresSinkConfig", "_SinkBase"} <= names
    assert sum(len(_settable(m)) for m in _config_models()) > 130


def test_every_settable_config_field_has_a_description() -> None:
    missing = [
        f"{model.__module__}.{model.__name__}.{name}"
        for model in sorted(_config_models(), key=lambda m: (m.__module__, m.__name__))
        for name, field in _settable(model).items()
        if not (field.description or "").strip()
    ]
    assert not missing, (
        "config fields without a description (Field(description=...): what it does, its unit, "
        f"what the default and the limits mean): {missing}"
    )


def test_secret_fields_name_their_variable_not_a_value() -> None:
    """A ``*_env`` field's description says that it names an environment variable; the
    secret fields themselves (filled from it) are never described, so never documented."""
    env_fields = [
        (model, name, field)
        for model in _config_models()
        for name, field in _settable(model).items()
        if name.endswith("_env")
    ]
    assert len(env_fields) >= 4  # secret_env, api_key_env (2), webhook_url_env, dsn_env
    for model, name, field in env_fields:
        assert "environment variable" in (field.description or ""), f"{model.__name__}.{name}"
    for model in _config_models():
        for name, field in model.model_fields.items():
            if field.exclude:
                assert f"{name}_env" in model.model_fields, f"{model.__name__}.{name}"


def test_descriptions_reach_the_exported_json_schema() -> None:
    schema = HookstreamConfig.model_json_schema(mode="serialization")
    kafka = schema["$defs"]["KafkaSettings"]["properties"]
    assert "KAFKA_BOOTSTRAP_SERVERS" in kafka["bootstrap_servers"]["description"]
    assert schema["properties"]["sources"]["description"]
