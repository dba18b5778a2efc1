"""What every config model shares: the frozen base, the field patterns and the template check.

Its own module because each block's module (sources, AI, sinks, flows, the root) builds on it
and none of them should import another just for these; it is the bottom of the config models.
The patterns live beside their hints in words, so :mod:`schemas.config_loader` can show
"must be 1 to 63 lowercase letters…" instead of the regex, and a new pattern cannot be added
without saying what it asks for.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas import templates
from schemas.errors import TemplateError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"
BASE_URL_PATTERN = r"^https?://"
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"
# What each pattern asks for, in words: the config errors show these instead of the regex.
PATTERN_HINTS = {
    NAME_PATTERN: "must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a "
    "letter or digit",
    TOPIC_PREFIX_PATTERN: "must be 1 to 100 letters, digits, '.', '_' or '-'",
    BASE_URL_PATTERN: "must start with http:// or https://",
    COLUMN_PATTERN: "must be a column name: a letter or '_', then letters, digits or '_' "
    "(at most 63)",
    TABLE_PATTERN: "must be a table name, optionally schema.table: each a letter or '_', then "
    "letters, digits or '_' (at most 63)",
}
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class ConfigModel(BaseModel):
    """The base of every config model: frozen (a loaded config cannot change under a running
    worker) and strict about unknown fields (a typo fails at start instead of being ignored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def check_template(value: str, allowed_roots: set[str]) -> str:
    """``value`` if it parses as a template using only ``allowed_roots``; else ValueError, which
    pydantic reports at the field that holds it."""
    try:
        template = templates.parse(value)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    unknown = template.roots - allowed_roots
    if unknown:
        raise ValueError(
            f"template refers to {sorted(unknown)}; it may use {sorted(allowed_roots)}"
        )
    return value


def check_secret_source(model: BaseModel, name: str, *, required: bool) -> None:
    """A secret comes from exactly one place: ``<name>_env`` (an environment variable) or
    ``<name>_file`` (a file, as Kubernetes and Docker mount secrets); ``required`` when the
    model cannot work without it. ValueError, reported at the model, otherwise."""
    env, file = getattr(model, f"{name}_env"), getattr(model, f"{name}_file")
    if env and file:
        raise ValueError(f"set {name}_env or {name}_file, not both")
    if required and not (env or file):
        raise ValueError(f"{name}_env or {name}_file is required")


def secret_origin(model: BaseModel, name: str) -> str:
    """Where the secret ``name`` comes from, for a message: the variable's name, or "file"
    and the file's path; never the value."""
    file = getattr(model, f"{name}_file", None)
    return f"file {file}" if file else str(getattr(model, f"{name}_env", None))
