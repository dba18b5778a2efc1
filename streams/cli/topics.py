"""Topic names as an operator types them: the short name of a topic hookstream owns, or a full name.

``hookstream tail dedupe`` and ``hookstream replay --topic events`` mean the deployment's
``<prefix>.dedupe`` and ``<prefix>.events`` (prefix: ``kafka.topic_prefix``). A name with a
dot is taken as a full topic name, whoever owns it. A name without a dot that hookstream does
not own is refused with the list of the short names: a typo (``tail dedup``) must not become a
wait on a topic that does not exist.
"""

from __future__ import annotations

from schemas import topics as catalogue
from schemas.errors import ToolError


def owned_topics(prefix: str) -> dict[str, str]:
    """Every topic hookstream creates, by short name: the catalogue's roles, then the worker's
    compacted memories (dedupe, ai-cache), the batch replay's journal (replay-jobs) and the
    batcher's (ai-batch-jobs). Results go to one topic for every flow today; a per-flow
    results topic would be added here."""
    names = catalogue.Topics(prefix)
    owned = {role: names.name(role) for role in catalogue.ROLES}
    for full in (names.dedupe, names.ai_cache, names.replay_jobs, names.ai_batch_jobs):
        owned[full.removeprefix(f"{prefix}.")] = full
    return owned


def resolve_topic(prefix: str, text: str, *, option: str = "topic") -> str:
    """The full name of ``text``: a short name of :func:`owned_topics`, or a full name."""
    name = text.strip()
    owned = owned_topics(prefix)
    if name in owned:
        return owned[name]
    if "." in name:
        return name
    raise ToolError(
        f"{option} {text!r}: not a topic hookstream owns; give one of {', '.join(owned)} "
        f"or a full topic name (e.g. {owned[catalogue.EVENTS]})"
    )
