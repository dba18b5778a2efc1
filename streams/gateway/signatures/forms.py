"""Form bodies (``application/x-www-form-urlencoded``): what Twilio and Slack's slash commands
and interactivity post.

Only sources whose scheme signs forms take them (:data:`FORM_SCHEMES`); every other source
still answers 415 to a form. The event's ``data`` is a JSON object of the fields: each field's
value is a string, and a field sent more than once is a list of its values in the order sent
(Twilio repeats none of its own; a form may). Slack's interactivity posts one field,
``payload``, holding JSON text: it stays text (``data.payload``), as Slack sent it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from schemas.errors import InvalidPayload

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
FORM_SCHEMES = frozenset({"twilio", "slack"})


def is_form(content_type: str | None) -> bool:
    return (
        content_type is not None
        and content_type.partition(";")[0].strip().lower() == FORM_MEDIA_TYPE
    )


def form_fields(body: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of a form body, percent- and plus-decoded, blanks kept (Twilio
    signs empty fields too)."""
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError):
        raise InvalidPayload(
            "the body is not a UTF-8 application/x-www-form-urlencoded form",
            code="invalid_form",
        ) from None


def form_data(body: bytes) -> dict[str, str | list[str]]:
    """The form as the CloudEvent's ``data``: one string per field, a list for a repeated one."""
    data: dict[str, str | list[str]] = {}
    for name, value in form_fields(body):
        held = data.get(name)
        if held is None:
            data[name] = value
        elif isinstance(held, list):
            held.append(value)
        else:
            data[name] = [held, value]
    return data
