"""``hookstream sign``: a curl command that posts a test body signed as a source's sender signs it.

The body goes as ``--data-binary @FILE``, byte for byte: curl's ``-d @FILE`` drops the file's
newlines, so the gateway receives other bytes than were signed and answers 401.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from schemas.errors import ToolError
from streams.cli.exits import EXIT_BAD_INPUT, EXIT_OK, fail
from streams.cli.ops import ConfigArg, Loader
from streams.cli.pubsub import configured_source, read_input

if TYPE_CHECKING:
    from schemas.config import HookstreamConfig

DESCRIPTION = (
    "Print a curl command that posts FILE to the gateway, signed as the source's sender signs "
    "it (the source's scheme and first secret), sent byte for byte with --data-binary. "
    "hubspot, twilio and square sign the source's signature.url, not --url: the curl command "
    "posts to --url, so both must reach the same gateway. A twilio or slack form: "
    "--content-type application/x-www-form-urlencoded."
)


def _gateway_url(config: HookstreamConfig) -> str:
    """The base URL the gateway of this config listens on, as a local sender reaches it."""
    settings = config.gateway
    # A gateway listening on every address is reached on this host's loopback.
    anywhere = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
    host = anywhere.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert_file else "http"
    return f"{scheme}://{host}:{settings.port}"


def curl_command(url: str, headers: dict[str, str], body_path: str) -> str:
    """A curl command that posts the body file byte for byte (``--data-binary``: ``-d`` would
    strip its newlines, and the signature of the body as sent would no longer match)."""
    import shlex

    lines = [f"curl -sS -X POST {shlex.quote(url)}"]
    lines += [f"-H {shlex.quote(f'{name}: {value}')}" for name, value in headers.items()]
    lines.append(f"--data-binary {shlex.quote('@' + body_path)}")
    return " \\\n  ".join(lines)


def _unset(env_name: str | None, file_name: str | None) -> str:
    """Why a secret is missing, naming its variable or file (never a value)."""
    if file_name:
        return f"file {file_name} is missing, unreadable or empty"
    return f"environment variable {env_name} is not set"


def cmd_sign(args: argparse.Namespace, load: Loader) -> int:
    """Print a curl command that posts the body signed as the source's sender signs it."""
    from streams.gateway.signatures import sign_request

    config = load(args.config)  # without secrets: only this source's is needed, checked here
    try:
        source = configured_source(config, args)
        signature = source.signature
        if signature.scheme != "none" and not signature.secrets:
            raise ToolError(
                f"{_unset(signature.secret_env, signature.secret_file)}: it holds the secret "
                f"of source {source.name!r} (signature.secret_"
                f"{'file' if signature.secret_file else 'env'} in {args.config})"
            )
        body = read_input(args.file, what="body")
    except ToolError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    signed = sign_request(source.signature, body, content_type=args.content_type)
    if args.headers_only:
        for name, value in signed.headers.items():
            print(f"{name}: {value}")
        if signed.query:  # Twilio's JSON variant: the body's hash goes in the query
            print(f"hookstream: post to the URL with ?{signed.query}", file=sys.stderr)
        return EXIT_OK
    base = (args.url or _gateway_url(config)).rstrip("/")
    headers = {"Content-Type": args.content_type, **signed.headers}
    url = f"{base}/webhooks/{source.name}" + (f"?{signed.query}" if signed.query else "")
    print(curl_command(url, headers, args.file))
    if args.file == "-":
        print("hookstream: pipe the same body into that curl (@- reads stdin)", file=sys.stderr)
    return EXIT_OK


def gateway_url(text: str) -> str:
    """An argparse type: an http:// or https:// URL with a host (curl would take ftp:// and
    post nothing the gateway receives)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        has_host = bool(parts.hostname)
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        parts, has_host = None, False
    if parts is None or parts.scheme not in ("http", "https") or not has_host:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL with a host (e.g. http://127.0.0.1:8080)"
        )
    return text


def add_command(commands: Any, load: Loader, config_arg: ConfigArg) -> None:
    """Add sign to the ``hookstream`` parser."""
    text = "print a curl command that posts a body signed for a source"
    sign = commands.add_parser("sign", help=text, description=DESCRIPTION)
    config_arg(sign)
    sign.add_argument("--source", required=True, help="a source of the config: its signature")
    sign.add_argument("file", metavar="FILE", help="body file, or - for stdin")
    sign.add_argument(
        "--url",
        type=gateway_url,
        help="the gateway's base URL (default: from gateway.host, gateway.port and TLS)",
    )
    sign.add_argument(
        "--content-type",
        default="application/json",
        help="the Content-Type header (default application/json); twilio and slack sources "
        "also take application/x-www-form-urlencoded (Twilio then signs the form's fields)",
    )
    sign.add_argument(
        "--headers-only",
        action="store_true",
        help="print only the signature headers, one 'Name: value' per line",
    )
    sign.set_defaults(func=lambda a: cmd_sign(a, load))
