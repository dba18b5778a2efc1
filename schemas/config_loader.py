"""Load the YAML config file and explain every problem as ``file:line: field.path: reason``.

Used by ``hookstream config check`` and, with the same messages, by every command at start.
Strings may use ``${VAR}`` or ``${VAR:-default}`` so one file serves laptop and compose; secrets
are only ever taken from environment variables named by ``*_env`` fields or from files named by
``*_file`` fields (Kubernetes and Docker mount secrets as files), never from the file itself, and
their values never appear in a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.config import HookstreamConfig
from schemas.config_base import PATTERN_HINTS
from schemas.config_checks import production_warnings, reference_problems
from schemas.config_messages import explain
from schemas.errors import ConfigError

Location = tuple[str | int, ...]
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ENV_REF = re.compile(r"\$\{(" + _ENV_NAME + r")(?::-([^}]*))?\}")
_SECRET_FIELDS = {
    "secret": "secret_env",
    "api_key": "api_key_env",
    "dsn": "dsn_env",
    "webhook_url": "webhook_url_env",
    "sasl_password": "sasl_password_env",
}
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def format_location(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class _Problems:
    """Collects problems with their line numbers, in file order."""

    def __init__(self, path: Path, lines: Mapping[Location, int]) -> None:
        self.path = path
        self.lines = lines
        self.items: list[tuple[int, str]] = []

    def add(self, location: Location, reason: str, *, shown: Location | None = None) -> None:
        """``location`` finds the line; ``shown`` (default: the same) is the path printed."""
        line = 0
        for end in range(len(location), -1, -1):
            if location[:end] in self.lines:
                line = self.lines[location[:end]]
                break
        where = f"{self.path}:{line}" if line else str(self.path)
        path = format_location(location if shown is None else shown)
        self.items.append((line, f"{where}: {path}: {reason}"))

    def in_file_order(self) -> list[str]:
        return [text for _, text in sorted(self.items, key=lambda i: i[0])]

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.in_file_order())


Loader = type[yaml.SafeLoader] | type[yaml.CSafeLoader]
# libyaml's parser when PyYAML was built with it: the same safe constructor and resolver, about
# ten times faster than the pure-Python parser (which took ~10 ms of every command's start).
_FAST_LOADER: Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str, loader_class: Loader) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (its marks give the line numbers) and its data, from one
    parse: ``yaml.safe_load`` would parse the file a second time."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def _line_map(node: yaml.Node, location: Location = ()) -> dict[Location, int]:
    lines = {location: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*location, key)] = key_node.start_mark.line + 1
            lines.update(_line_map(value_node, (*location, key)))
            lines[(*location, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_map(item, (*location, index)))
    return lines


def _interpolate(
    value: Any, location: Location, env: Mapping[str, str], problems: _Problems
) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.add(location, f"environment variable {name} is not set and has no default")
            return ""

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, (*location, k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*location, i), env, problems) for i, v in enumerate(value)]
    return value


def _read_secret_file(
    name: str, base: Path, location: Location, problems: _Problems, required: bool
) -> str | None:
    """The secret in file ``name`` (relative to the config file's folder), with one trailing
    line break removed (``echo`` and most editors add one; Kubernetes' mounted Secrets keep the
    bytes as given); None with a problem naming the path, never the content, when it cannot be
    used and the secret is ``required``."""
    path = Path(name) if Path(name).is_absolute() else base / name
    reason: str | None = None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read {path}: {exc.strerror or exc}"
    except UnicodeDecodeError:
        reason = f"{path} is not UTF-8 text"
    else:
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if text:
            return text
        reason = f"{path} is empty"
    if required:
        problems.add(location, reason)
    return None


def _inject_secrets(
    value: Any,
    location: Location,
    env: Mapping[str, str],
    base: Path,
    problems: _Problems,
    required: bool,
) -> None:
    """Refuse inline secrets; put each ``*_env`` variable's or ``*_file`` file's value beside
    it, or report it."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _inject_secrets(item, (*location, index), env, base, problems, required)
        return
    if not isinstance(value, dict):
        return
    for secret_field, env_field in _SECRET_FIELDS.items():
        file_field = f"{secret_field}_file"
        if secret_field in value:
            problems.add(
                (*location, secret_field),
                f"secrets are not written in the file: put it in an environment variable "
                f"or a file and give its name in {env_field} or {file_field}",
            )
            del value[secret_field]
        env_name = value.get(env_field)
        file_name = value.get(file_field)
        if env_name and file_name:
            problems.add((*location, file_field), f"set {env_field} or {file_field}, not both")
            del value[file_field]  # one message: the model would say it again
            file_name = None
        if isinstance(file_name, str) and file_name:
            secret = _read_secret_file(file_name, base, (*location, file_field), problems, required)
            if secret is not None:
                value[secret_field] = secret
        if isinstance(env_name, str) and env_name and not re.fullmatch(_ENV_NAME, env_name):
            # Most likely the secret itself pasted where its variable's name belongs: never
            # echo it.
            problems.add(
                (*location, env_field),
                "must be the name of an environment variable (letters, digits and '_', "
                "like API_KEY), not the secret itself",
            )
        elif isinstance(env_name, str) and env_name:
            if env.get(env_name):
                value[secret_field] = env[env_name]
            elif required:
                problems.add((*location, env_field), f"environment variable {env_name} is not set")
    for key, child in list(value.items()):
        if key not in _SECRET_FIELDS:
            _inject_secrets(child, (*location, key), env, base, problems, required)


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    require_secrets: bool = True,
) -> HookstreamConfig:
    """Parse and validate the file; raise :class:`ConfigError` listing every problem."""
    env = os.environ if env is None else env
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read the config file: {exc.strerror}"]) from None
    try:
        node, raw = _parse(text, _FAST_LOADER)
    except yaml.YAMLError:
        # Parsed again by the pure-Python parser, whose messages name more (an undefined
        # alias's name) and stay the ones the file's authors know; errors are the rare path.
        try:
            node, raw = _parse(text, yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
            reason = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([f"{where}: invalid YAML: {reason}"]) from None
    problems = _Problems(file, _line_map(node) if node is not None else {})
    if not isinstance(raw, dict):
        problems.add((), "the file must be a YAML mapping with sources, providers and flows")
        problems.raise_if_any()
    data = _interpolate(raw, (), env, problems)
    _inject_secrets(data, (), env, file.parent, problems, require_secrets)
    if env.get(BOOTSTRAP_ENV):
        data.setdefault("kafka", {})
        if isinstance(data["kafka"], dict):
            data["kafka"]["bootstrap_servers"] = env[BOOTSTRAP_ENV]
    for location, reason in reference_problems(data):
        problems.add(location, reason)
    try:
        config = HookstreamConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            if error["type"] == "extra_forbidden" and error["loc"][-1] in _SECRET_FIELDS:
                continue  # put there by _inject_secrets beside an unknown *_env field
            explained = explain(error, HookstreamConfig, PATTERN_HINTS)
            problems.add(explained.line_at, explained.reason, shown=explained.shown)
        problems.raise_if_any()
        raise AssertionError("unreachable") from exc
    problems.raise_if_any()
    return config


def config_warnings(path: str | os.PathLike[str], config: HookstreamConfig) -> list[str]:
    """What in a valid file is fine for development but not for production, as
    ``file:line: field.path: reason``; ``hookstream config check`` prints these and still
    succeeds. The file is parsed again for the line numbers (about a millisecond)."""
    file = Path(path)
    try:
        node, _ = _parse(file.read_text(encoding="utf-8"), _FAST_LOADER)
    except (OSError, yaml.YAMLError):
        node = None  # it loaded a moment ago; without lines the warnings still name the field
    warnings = _Problems(file, _line_map(node) if node is not None else {})
    for location, reason in production_warnings(config):
        warnings.add(location, reason)
    return warnings.in_file_order()
