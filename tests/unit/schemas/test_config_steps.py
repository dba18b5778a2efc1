"""Multi-step flows (``steps:``) and flows with no AI step (``output:``) as the loader reads
them: what loads, and each mistake reported at its own line with the nearest name."""

from __future__ import annotations

from pathlib import Path

from schemas.config_loader import load_config
from tests.unit.schemas.test_config_loader import EXAMPLE_ENV, problems_of, write
from tests.unit.schemas.test_output_schema import BASE

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flows-steps.yaml"
# The head of the output schema tests' file, up to the flow's ai (lines 1-12).
HEAD = BASE[: BASE.index("    ai:\n")]
# Lines 13-25 of a two-step flow (HEAD is lines 1-12).
STEPS = """\
    steps:
      - name: classify
        provider: default
        prompt: "{{ data.message }}"
        output:
          type: object
          properties: {category: {type: string}, summary: {type: string}}
      - name: reply
        provider: default
        prompt: "A {{ steps.classify.category }} ticket: {{ steps.classify.summary }}"
        output:
          type: object
          properties: {text: {type: string}}
"""
SINK = """\
    sinks:
      - name: crm
        kind: http
        url: http://crm/x
        body: {BODY}
"""


def config(tmp_path: Path, flow: str, body: str | None = None) -> Path:
    text = HEAD + flow + (SINK.replace("{BODY}", body) if body is not None else "")
    return write(tmp_path, text)


def test_the_example_loads_with_its_steps_and_its_no_ai_flow() -> None:
    loaded = load_config(EXAMPLE, env=EXAMPLE_ENV)
    reply, sync = loaded.flows
    assert [name for name, _ in reply.tasks] == ["classify", "draft"]
    assert reply.ai is None
    assert reply.output is None
    assert sync.tasks == ()
    assert sync.output is not None
    assert set(sync.output) == {"event", "amount", "currency"}


def test_a_flow_with_ai_keeps_one_unnamed_task(tmp_path: Path) -> None:
    flow = '    ai: {provider: default, prompt: "{{ data.m }}", output: {type: object}}\n'
    loaded = load_config(config(tmp_path, flow), env={})
    [(name, task)] = loaded.flows[0].tasks
    assert name is None
    assert task.prompt == "{{ data.m }}"


def test_a_flow_with_neither_has_no_task_and_an_empty_output(tmp_path: Path) -> None:
    loaded = load_config(config(tmp_path, "", '{id: "{{ data.id }}"}'), env={})
    assert loaded.flows[0].tasks == ()
    assert loaded.flows[0].output is None  # the stage writes {} as the result's output


def test_steps_read_in_sinks_and_later_prompts_load(tmp_path: Path) -> None:
    body = '{c: "{{ steps.classify.category }}", t: "{{ result.text }}"}'
    loaded = load_config(config(tmp_path, STEPS, body), env={})
    assert [name for name, _ in loaded.flows[0].tasks] == ["classify", "reply"]


def test_a_prompt_reading_an_unknown_step_names_the_nearest(tmp_path: Path) -> None:
    path = config(tmp_path, STEPS.replace("steps.classify.category", "steps.clasify.category"))
    assert problems_of(path, {}) == [
        f"{path}:22: flows[0].steps[1].prompt: {{{{ steps.clasify.category }}}}: unknown step "
        "'clasify'; expected one of: classify (did you mean 'classify'?)"
    ]


def test_a_prompt_reading_its_own_or_a_later_step_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, STEPS.replace('"{{ data.message }}"', '"{{ steps.reply.text }}"'))
    assert problems_of(path, {}) == [
        f"{path}:16: flows[0].steps[0].prompt: {{{{ steps.reply.text }}}}: step 'reply' has "
        "not run yet here: a prompt reads only earlier steps"
    ]


def test_a_prompt_reading_a_field_the_step_does_not_declare_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, STEPS.replace("classify.summary", "classify.sumary"))
    assert problems_of(path, {}) == [
        f"{path}:22: flows[0].steps[1].prompt: {{{{ steps.classify.sumary }}}}: step "
        "classify's output declares no field 'sumary'; did you mean 'summary'?"
    ]


def test_sink_fields_are_checked_against_the_step_and_the_last_step(tmp_path: Path) -> None:
    body = '{c: "{{ steps.classify.categroy }}", t: "{{ result.txt }}", n: "{{ steps.x.y }}"}'
    path = config(tmp_path, STEPS, body)
    assert problems_of(path, {}) == [
        f"{path}:30: flows[0].sinks[0].body.c: {{{{ steps.classify.categroy }}}}: step "
        "classify's output declares no field 'categroy'; did you mean 'category'?",
        f"{path}:30: flows[0].sinks[0].body.t: {{{{ result.txt }}}}: the last step's (reply) "
        "output declares no field 'txt'; did you mean 'text'?",
        f"{path}:30: flows[0].sinks[0].body.n: {{{{ steps.x.y }}}}: unknown step 'x'; "
        "expected one of: classify, reply",
    ]


def test_a_sink_when_on_a_step_field_is_checked(tmp_path: Path) -> None:
    text = (
        HEAD
        + STEPS
        + SINK.replace("{BODY}", "{}")
        + ("        when: {field: steps.classify.categry, equals: bug}\n")
    )
    path = write(tmp_path, text)
    assert problems_of(path, {}) == [
        f"{path}:31: flows[0].sinks[0].when.field: steps.classify.categry: step classify's "
        "output declares no field 'categry'; did you mean 'category'?"
    ]


def test_two_steps_of_one_name_are_refused_at_the_second(tmp_path: Path) -> None:
    path = config(tmp_path, STEPS.replace("- name: reply", "- name: classify"))
    problems = problems_of(path, {})
    assert f"{path}:20: flows[0].steps[1].name: 'classify' names two steps" in problems


def test_a_step_naming_an_unknown_provider_is_refused_at_its_line(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        STEPS.replace(
            'provider: default\n        prompt: "A', ('provider: defualt\n        prompt: "A')
        ),
    )
    assert problems_of(path, {}) == [
        f"{path}:21: flows[0].steps[1].provider: unknown provider 'defualt'; expected one "
        "of: default (did you mean 'default'?)"
    ]


def test_ai_and_steps_together_are_refused(tmp_path: Path) -> None:
    ai = '    ai: {provider: default, prompt: "x", output: {type: object}}\n'
    path = config(tmp_path, ai + STEPS)
    assert problems_of(path, {}) == [
        f"{path}:11: flows[0]: set ai (one model call) or steps (several), not both"
    ]


def test_an_output_mapping_beside_an_ai_step_is_refused(tmp_path: Path) -> None:
    ai = '    ai: {provider: default, prompt: "x", output: {type: object}}\n'
    path = config(tmp_path, ai + '    output: {a: "{{ data.a }}"}\n')
    [problem] = problems_of(path, {})
    assert problem.startswith(f"{path}:11: flows[0]: output: only for a flow with no AI step")


def test_an_output_mapping_reading_result_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, '    output: {a: "{{ result.a }}"}\n')
    assert problems_of(path, {}) == [
        f"{path}:13: flows[0].output: template refers to ['result']; it may use "
        "['data', 'enrichment', 'event']"
    ]


def test_a_sink_reading_a_key_the_output_mapping_lacks_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, '    output: {amount: "{{ data.a }}"}\n', '{x: "{{ result.amont }}"}')
    assert problems_of(path, {}) == [
        f"{path}:18: flows[0].sinks[0].body.x: {{{{ result.amont }}}}: the flow's output "
        "mapping declares no field 'amont'; did you mean 'amount'?"
    ]


def test_a_sink_reading_steps_of_a_flow_without_steps_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, "", '{x: "{{ steps.a.b }}"}')
    assert problems_of(path, {}) == [
        f"{path}:17: flows[0].sinks[0].body.x: {{{{ steps.a.b }}}}: the flow has no steps "
        "(steps.<name> reads a multi-step flow's answers)"
    ]
