"""Checks across a whole config file: cross-references, and settings unfit for production.

Its own module because neither check belongs to one model. :func:`reference_problems` reads the
raw file data (a flow naming a source or provider that does not exist, a name used twice), so
its findings are reported together with the field errors of the models rather than instead of
them; :func:`production_warnings` reads a valid config and finds what is right on a laptop and
wrong in production. :mod:`schemas.config_loader` turns both into ``file:line: field: reason``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from schemas import conditions, templates
from schemas.config import HookstreamConfig
from schemas.config_messages import show, unknown_choice
from schemas.config_sinks import SINK_ROOTS, SINK_TEMPLATE_FIELDS
from schemas.errors import TemplateError
from schemas.output_schema import result_field_problem, schema_problems

Location = tuple[str | int, ...]


def reference_problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-references, checked on the raw file data so they are reported together with
    field errors: (location, reason) pairs."""
    problems: list[tuple[tuple[str | int, ...], str]] = []

    def names(section: str) -> list[str | None]:
        items = data.get(section)
        if not isinstance(items, list):
            return []
        return [i.get("name") if isinstance(i, dict) else None for i in items]

    for section in ("sources", "providers", "flows"):
        first_index: dict[str, int] = {}
        for index, name in enumerate(names(section)):
            if name is None:
                continue
            if name in first_index:
                problems.append(
                    (
                        (section, index, "name"),
                        f"{name!r} is already the name of {section}[{first_index[name]}]",
                    )
                )
            first_index.setdefault(name, index)
    sources = [n for n in names("sources") if n is not None]
    providers = [n for n in names("providers") if n is not None]
    flows = data.get("flows") if isinstance(data.get("flows"), list) else []
    for i, flow in enumerate(flows or []):
        if not isinstance(flow, dict):
            continue
        match = flow.get("match")
        source = match.get("source") if isinstance(match, dict) else None
        if isinstance(source, str) and source not in sources:
            problems.append(
                (("flows", i, "match", "source"), unknown_choice("source", source, sources))
            )
        for at, task in _tasks(flow, ("flows", i)):
            provider = task.get("provider")
            if isinstance(provider, str) and provider not in providers:
                problems.append(
                    ((*at, "provider"), unknown_choice("provider", provider, providers))
                )
            fallbacks = task.get("fallbacks")
            for j, fallback in enumerate(fallbacks if isinstance(fallbacks, list) else []):
                name = fallback.get("provider") if isinstance(fallback, dict) else None
                if isinstance(name, str) and name not in providers:
                    problems.append(
                        (
                            (*at, "fallbacks", j, "provider"),
                            unknown_choice("provider", name, providers),
                        )
                    )
        problems.extend(_step_problems(flow, ("flows", i)))
        problems.extend(_result_field_problems(flow, ("flows", i)))
    return problems


def _tasks(flow: dict[str, Any], location: Location) -> list[tuple[Location, dict[str, Any]]]:
    """The flow's AI tasks as written, with their locations: ``ai``, or each of ``steps``."""
    ai, steps = flow.get("ai"), flow.get("steps")
    found: list[tuple[Location, dict[str, Any]]] = []
    if isinstance(ai, dict):
        found.append(((*location, "ai"), ai))
    for j, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict):
            found.append(((*location, "steps", j), step))
    return found


def _valid_schema(task: Any) -> dict[str, Any] | None:
    """A task's output schema when it is one (an invalid one is the model's to report)."""
    schema = task.get("output") if isinstance(task, dict) else None
    return schema if isinstance(schema, dict) and not schema_problems(schema) else None


def _step_schemas(flow: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Each named step's output schema (None when it is not valid), in the steps' order."""
    steps = flow.get("steps")
    schemas: dict[str, dict[str, Any] | None] = {}
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict) and isinstance(step.get("name"), str):
            schemas.setdefault(step["name"], _valid_schema(step))  # a name used twice: the first
    return schemas


def _result_owner(flow: dict[str, Any]) -> str:
    """What ``result`` is, for a message about a field it lacks."""
    if "ai" in flow:
        return "the flow's ai.output"
    steps = flow.get("steps")
    if isinstance(steps, list) and steps:
        name = steps[-1].get("name") if isinstance(steps[-1], dict) else None
        return f"the last step's ({name}) output"
    return "the flow's output mapping"


def _result_schema(flow: dict[str, Any]) -> dict[str, Any] | None:
    """What ``result`` holds, as a schema: the answer of ``ai`` or of the last step, or for a
    flow with no AI step an object with exactly the keys of its ``output`` mapping."""
    if "ai" in flow:
        return _valid_schema(flow.get("ai"))
    steps = flow.get("steps")
    if isinstance(steps, list) and steps:
        return _valid_schema(steps[-1])
    output = flow.get("output")
    keys = output if isinstance(output, dict) else {}
    return {"type": "object", "properties": {str(key): {} for key in keys}}


def _steps_reason(
    path: tuple[str, ...], steps: Mapping[str, dict[str, Any] | None], readable: list[str]
) -> str | None:
    """Why ``steps.<name>.<field>`` cannot be read where only the steps ``readable`` (those
    before it, or all of them for a sink) have answered, or None."""
    if len(path) < 2:
        return "name a step and a field: steps.<step>.<field>"
    name = path[1]
    if name not in readable:
        if not steps:
            return "the flow has no steps (steps.<name> reads a multi-step flow's answers)"
        if name in steps:
            return f"step {name!r} has not run yet here: a prompt reads only earlier steps"
        return unknown_choice("step", name, readable)
    schema = steps.get(name)
    if schema is None:
        return None
    return result_field_problem(schema, path[2:], f"steps.{name}", f"step {name}'s output")


def _step_problems(flow: dict[str, Any], location: Location) -> list[tuple[Location, str]]:
    """Step names used twice, and step prompts reading a step that has not answered yet or
    a field its output schema does not have."""
    steps = flow.get("steps")
    if not isinstance(steps, list):
        return []
    schemas = _step_schemas(flow)
    problems: list[tuple[Location, str]] = []
    earlier: list[str] = []
    for j, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        name = step.get("name")
        if isinstance(name, str) and name in earlier:
            problems.append(((*location, "steps", j, "name"), f"{name!r} names two steps"))
        for field in ("system", "prompt"):
            text = step.get(field)
            if not isinstance(text, str):
                continue
            try:
                paths = templates.parse(text).paths
            except TemplateError:
                continue  # the step's model reports it
            for path in paths:
                reason = _steps_reason(path, schemas, earlier) if path[0] == "steps" else None
                if reason is not None:
                    problems.append(
                        ((*location, "steps", j, field), f"{{{{ {'.'.join(path)} }}}}: {reason}")
                    )
        if isinstance(name, str):
            earlier.append(name)
    return problems


def _field_reason(
    path: tuple[str, ...],
    result: dict[str, Any] | None,
    steps: Mapping[str, dict[str, Any] | None],
    owner: str = "the flow's ai.output",
) -> str | None:
    """Why a sink's ``result.<field>`` or ``steps.<name>.<field>`` is in no result, or None."""
    if path[0] == "result":
        return None if result is None else result_field_problem(result, path[1:], owner=owner)
    if path[0] == "steps":
        return _steps_reason(path, steps, list(steps))
    return None


def _field_schema(
    path: tuple[str, ...],
    result: dict[str, Any] | None,
    steps: Mapping[str, dict[str, Any] | None],
) -> Mapping[str, Any] | None:
    """The declared schema of a sink's ``result.<field>`` or ``steps.<name>.<field>``."""
    if path[0] == "result" and result is not None:
        return _declared(result, path[1:])
    if path[0] == "steps" and len(path) >= 2 and steps.get(path[1]) is not None:
        return _declared(steps[path[1]] or {}, path[2:])
    return None


def _result_field_problems(flow: dict[str, Any], location: Location) -> list[tuple[Location, str]]:
    """Sink templates reading ``result.<field>`` (or ``steps.<name>.<field>``) that no
    answer valid for the flow's output schemas has: a typo found at load rather than as a
    dead letter at the first delivery. Skipped for schemas that are not valid (the model
    reports that) and for templates that do not parse (so does the sink's model)."""
    sinks = flow.get("sinks")
    if not isinstance(sinks, list):
        return []
    result, steps = _result_schema(flow), _step_schemas(flow)
    problems: list[tuple[Location, str]] = []
    for j, sink in enumerate(sinks):
        if not isinstance(sink, dict):
            continue
        for field in SINK_TEMPLATE_FIELDS:
            where = (*location, "sinks", j, field)
            for at, text in templates.strings_in(sink.get(field), where):
                try:
                    paths = templates.parse(text).paths
                except TemplateError:
                    continue
                for path in paths:
                    reason = _field_reason(path, result, steps, _result_owner(flow))
                    if reason is not None:
                        problems.append((at, f"{{{{ {'.'.join(path)} }}}}: {reason}"))
        problems.extend(
            _when_problems(
                result,
                steps,
                sink.get("when"),
                (*location, "sinks", j, "when"),
                _result_owner(flow),
            )
        )
    return problems


def _when_problems(
    result: dict[str, Any] | None,
    steps: Mapping[str, dict[str, Any] | None],
    when: Any,
    location: Location,
    owner: str = "the flow's ai.output",
) -> list[tuple[Location, str]]:
    """A sink's ``when`` testing a ``result.<field>`` no valid answer has: such a test would
    be false (or, under ``not``, true) for every result, silently. A condition that does not
    parse is skipped here: the sink's model reports it."""
    if when is None:
        return []
    try:
        parsed = conditions.parse(when, SINK_ROOTS)
    except conditions.ConditionError:
        return []
    problems: list[tuple[Location, str]] = []
    for at, test in parsed.tests(location):
        reason = _field_reason(test.path, result, steps, owner)
        if reason is not None:
            problems.append(((*at, "field"), f"{'.'.join(test.path)}: {reason}"))
            continue
        problem = _never_holds(_field_schema(test.path, result, steps), test)
        if problem is not None:
            problems.append(((*at, test.operator), f"{'.'.join(test.path)}: {problem}"))
    return problems


def _declared(schema: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The schema of ``result.<path>`` when plain nested ``properties`` declare it, else None
    (a ``$ref`` or a combinator on the way: not judged, the check stays lenient)."""
    node: Any = schema
    for segment in path:
        properties = node.get("properties") if isinstance(node, Mapping) else None
        if not isinstance(properties, Mapping) or not isinstance(properties.get(segment), Mapping):
            return None
        node = properties[segment]
    return node if isinstance(node, Mapping) else None


def _never_holds(node: Mapping[str, Any] | None, test: conditions.FieldTest) -> str | None:
    """Why ``test`` is false for every answer valid for ``node`` (a value outside its
    ``enum``/``const``, a comparison with a field that is never a number or a string), or
    None. A typo there would silently turn a sink off, or on for every result under not."""
    if node is None:
        return None
    allowed = node.get("enum") if "enum" in node else [node["const"]] if "const" in node else None
    if isinstance(allowed, list) and test.operator in ("equals", "in"):
        values = test.value if test.operator == "in" else (test.value,)
        outside = [v for v in values if not any(conditions.same(v, a) for a in allowed)]
        if outside:
            return (
                f"{show(outside[0])} is not one of the values the flow's ai.output allows "
                f"({', '.join(show(a) for a in allowed)})"
            )
    kinds = node.get("type")
    kinds = {kinds} if isinstance(kinds, str) else set(kinds) if isinstance(kinds, list) else None
    if kinds is not None:
        if test.operator in conditions.COMPARISONS:
            wanted = {"integer", "number"} if isinstance(test.value, int | float) else {"string"}
            if not kinds & wanted:
                return (
                    f"{test.operator} compares with {show(test.value)}, but the flow's "
                    f"ai.output makes it {' or '.join(sorted(kinds))}: never true"
                )
        if test.operator == "matches" and "string" not in kinds:
            return (
                f"matches reads strings, but the flow's ai.output makes it "
                f"{' or '.join(sorted(kinds))}: never true"
            )
    return None


def _is_local_host(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hosts(bootstrap_servers: str) -> list[str]:
    """The host of each ``host:port`` (IPv6 in brackets) of a bootstrap list."""
    hosts = []
    for server in filter(None, (s.strip() for s in bootstrap_servers.split(","))):
        host = server.rsplit(":", 1)[0] if server.count(":") == 1 or "]:" in server else server
        hosts.append(host)
    return hosts


def _plaintext_kafka_warnings(
    config: HookstreamConfig, remote: list[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """An unencrypted connection to a broker that is not local. Only a remote broker: on
    loopback nothing crosses a network, and scripts/kafka's local broker is plaintext."""
    kafka = config.kafka
    if not remote or kafka.security_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT"):
        return []
    location: tuple[str | int, ...] = ("kafka", "security_protocol")
    if kafka.security_protocol == "PLAINTEXT":
        return [
            (
                location,
                f"PLAINTEXT on a broker that is not local ({remote[0]}): no login and no "
                "encryption, so anyone on the network path can read and write every event; "
                "use SASL_SSL (or SSL) in production",
            )
        ]
    # SCRAM never sends the password itself, but a captured exchange lets an eavesdropper
    # guess it offline; PLAIN sends it as is.
    exposed = (
        "the password crosses the network unencrypted"
        if kafka.sasl_mechanism == "PLAIN"
        else f"the {kafka.sasl_mechanism} login crosses the network unencrypted (a captured "
        "exchange lets an eavesdropper guess the password offline)"
    )
    return [
        (
            location,
            f"SASL_PLAINTEXT on a broker that is not local ({remote[0]}): {exposed}, and "
            "every event travels unencrypted; use SASL_SSL in production",
        )
    ]


def production_warnings(config: HookstreamConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Settings that are right on a laptop and wrong in production, as (location, reason):
    ``hookstream config check`` prints them and still accepts the file, because the same file
    serves both and only its reader knows which one this is."""
    warnings: list[tuple[tuple[str | int, ...], str]] = []
    remote = [h for h in _hosts(config.kafka.bootstrap_servers) if not _is_local_host(h)]
    if config.kafka.replication_factor == 1 and remote:
        warnings.append(
            (
                ("kafka", "replication_factor"),
                f"1 copy of each event on a broker that is not local ({remote[0]}): losing "
                "that broker loses webhooks already answered 2xx; use 3 in production",
            )
        )
    warnings.extend(_plaintext_kafka_warnings(config, remote))
    if not _is_local_host(config.gateway.host):
        for index, source in enumerate(config.sources):
            if source.signature.scheme == "none":
                warnings.append(
                    (
                        ("sources", index, "signature", "scheme"),
                        f"source {source.name!r} accepts unsigned webhooks on "
                        f"{config.gateway.host}: anyone who reaches the gateway can post "
                        "events; sign them in production",
                    )
                )
    if config.worker.allow_private_networks:
        warnings.append(
            (
                ("worker", "allow_private_networks"),
                "every sink and lookup may call loopback and private addresses, so a templated "
                "URL can reach internal services (SSRF); meant for local simulators, use "
                "allow_private on the single sink or lookup that needs it in production",
            )
        )
    return warnings
