"""Secrets from files (``*_file``): Kubernetes and Docker mount secrets as files.

Each secret a ``*_env`` field can name may instead come from the file a ``*_file`` field names:
exactly one of the two, the content with one trailing line break removed, and a file that
cannot be used reported as ``file:line: field: reason`` naming its path, never its content.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config_loader import load_config
from tests.unit.schemas.test_config_descriptions import _config_models, _settable
from tests.unit.schemas.test_config_loader import VALID, problems_of, with_sink, write

# VALID with the provider's key from a file: line 11 is the api_key_file line.
FROM_FILE = VALID.replace("api_key_env: AI_KEY", "api_key_file: secrets/ai-key")
ENV = {"HELPDESK_SECRET": "hd-secret-abc"}


def secret_file(tmp_path: Path, content: bytes, name: str = "secrets/ai-key") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_the_key_is_read_from_a_file_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file(tmp_path, b"ai-key-from-file\n")
    config = write(tmp_path, FROM_FILE)
    monkeypatch.chdir(tmp_path.parent)  # a relative path is not taken from the working dir
    provider = load_config(config, env=ENV).provider("default")
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "ai-key-from-file"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"key", "key"),
        (b"key\n", "key"),
        (b"key\r\n", "key"),
        (b"key\n\n", "key\n"),  # one line break removed, not all
        (b" key \n", " key "),  # blanks are part of the secret
    ],
)
def test_one_trailing_line_break_is_removed(tmp_path: Path, content: bytes, expected: str) -> None:
    secret_file(tmp_path, content)
    provider = load_config(write(tmp_path, FROM_FILE), env=ENV).provider("default")
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == expected


def test_an_absolute_path_is_used_as_given(tmp_path: Path) -> None:
    key = secret_file(tmp_path, b"abs-key\n", name="elsewhere/key")
    text = VALID.replace("api_key_env: AI_KEY", f"api_key_file: {key}")
    (tmp_path / "conf").mkdir()
    provider = load_config(write(tmp_path / "conf", text), env=ENV).provider("default")
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "abs-key"


def test_a_missing_file_names_the_field_and_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, FROM_FILE)
    assert problems_of(path, ENV) == [
        f"{path}:11: providers[0].api_key_file: cannot read {tmp_path / 'secrets/ai-key'}: "
        "No such file or directory"
    ]


def test_a_directory_is_not_a_secret_file(tmp_path: Path) -> None:
    (tmp_path / "secrets" / "ai-key").mkdir(parents=True)
    path = write(tmp_path, FROM_FILE)
    assert problems_of(path, ENV) == [
        f"{path}:11: providers[0].api_key_file: cannot read {tmp_path / 'secrets/ai-key'}: "
        "Is a directory"
    ]


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    secret_file(tmp_path, b"\n")
    path = write(tmp_path, FROM_FILE)
    assert problems_of(path, ENV) == [
        f"{path}:11: providers[0].api_key_file: {tmp_path / 'secrets/ai-key'} is empty"
    ]


def test_a_binary_file_is_refused_without_showing_its_bytes(tmp_path: Path) -> None:
    secret_file(tmp_path, b"\xff\xfesecret-bytes")
    path = write(tmp_path, FROM_FILE)
    problems = problems_of(path, ENV)
    assert problems == [
        f"{path}:11: providers[0].api_key_file: {tmp_path / 'secrets/ai-key'} is not UTF-8 text"
    ]
    assert "secret-bytes" not in "\n".join(problems)


def test_env_and_file_together_are_refused(tmp_path: Path) -> None:
    secret_file(tmp_path, b"k")
    text = VALID.replace(
        "api_key_env: AI_KEY", "api_key_env: AI_KEY\n    api_key_file: secrets/ai-key"
    )
    path = write(tmp_path, text)
    assert problems_of(path, {**ENV, "AI_KEY": "k"}) == [
        f"{path}:12: providers[0].api_key_file: set api_key_env or api_key_file, not both"
    ]


def test_a_signing_secret_from_a_file_keeps_its_rotation_list(tmp_path: Path) -> None:
    secret_file(tmp_path, b"new-secret\nold-secret\n", name="hd")
    text = VALID.replace("secret_env: HELPDESK_SECRET", "secret_file: hd")
    config = load_config(write(tmp_path, text), env={"AI_KEY": "k"})
    assert config.sources[0].signature.secrets == ("new-secret", "old-secret")


def test_a_bad_secret_in_a_file_is_named_by_its_path_not_its_content(tmp_path: Path) -> None:
    secret_file(tmp_path, b"whsec_!!not-base64-hunter2\n", name="hd")
    text = VALID.replace("scheme: hmac-sha256", "scheme: standard-webhooks").replace(
        "secret_env: HELPDESK_SECRET", "secret_file: hd"
    )
    path = write(tmp_path, text)
    problems = problems_of(path, {"AI_KEY": "k"})
    assert len(problems) == 1
    assert "the secret in file hd must be 'whsec_' followed by base64" in problems[0]
    assert "hunter2" not in problems[0]


def test_a_source_needs_one_or_the_other(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("      secret_env: HELPDESK_SECRET\n", ""))
    assert problems_of(path, {"AI_KEY": "k"}) == [
        f"{path}:4: sources[0].signature: secret_env or secret_file is required unless "
        "scheme is 'none'"
    ]


def test_sinks_take_their_secrets_from_files(tmp_path: Path) -> None:
    secret_file(tmp_path, b"https://hooks.example/T/B/x\n", name="slack-url")
    secret_file(tmp_path, b"postgresql://u@db/x\n", name="dsn")
    secret_file(tmp_path, b"crm-key\n", name="crm-key")
    text = (
        with_sink("name: alerts", "kind: slack", "webhook_url_file: slack-url", "text: hi")
        + "      - name: db\n        kind: postgres\n        dsn_file: dsn\n"
        "        table: t\n        key: [id]\n        columns: {id: '{{ event.id }}'}\n"
        "      - name: crm\n        kind: http\n        url: http://crm/x\n"
        "        api_key_file: crm-key\n"
    )
    config = load_config(write(tmp_path, text), env={**ENV, "AI_KEY": "k"})
    slack, postgres, http = config.flow("triage").sinks
    assert slack.webhook_url.get_secret_value() == "https://hooks.example/T/B/x"  # type: ignore[union-attr]
    assert postgres.dsn.get_secret_value() == "postgresql://u@db/x"  # type: ignore[union-attr]
    assert http.api_key.get_secret_value() == "crm-key"  # type: ignore[union-attr]


def test_a_slack_sink_needs_its_url_from_one_place(tmp_path: Path) -> None:
    path = write(tmp_path, with_sink("name: alerts", "kind: slack", "text: hi"))
    assert problems_of(path, {**ENV, "AI_KEY": "k"}) == [
        f"{path}:26: flows[0].sinks[0]: webhook_url_env or webhook_url_file is required"
    ]


def test_without_secrets_an_unreadable_file_is_no_error(tmp_path: Path) -> None:
    """Commands that need no secret (tail, dlq, replay) load the file on a laptop where the
    pods' mounted secrets do not exist."""
    config = load_config(write(tmp_path, FROM_FILE), env=ENV, require_secrets=False)
    assert config.provider("default").api_key is None


def test_every_env_secret_has_a_file_sibling() -> None:
    """A secret a ``*_env`` field names can come from a file too, described as such."""
    pairs = [
        (model, name)
        for model in _config_models()
        for name in _settable(model)
        if name.endswith("_env")
    ]
    assert len(pairs) >= 5
    for model, name in pairs:
        sibling = name.removesuffix("_env") + "_file"
        field = model.model_fields.get(sibling)
        assert field is not None, f"{model.__name__}.{name} has no {sibling}"
        assert "file" in (field.description or ""), f"{model.__name__}.{sibling}"
