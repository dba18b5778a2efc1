"""Port numbers as a user gives them, and the bind errors that mean "choose another port".

Every command that listens (``hookstream gateway --port``, ``worker``/``sinks --metrics-port``,
the simulators' ``--port``) takes its port through :func:`port_type`, so a bad one is refused by
argparse in one line naming the option (exit 2) before anything starts. Without it, ``int()``
let through what the socket layer then mangled: 99999 listened on 34463 (the kernel keeps the
low 16 bits), -1 raised ``socket.gaierror``, and the metrics server's ``OverflowError`` came
after the Faust worker had joined its group.

An option whose default comes from an environment variable takes it as an :class:`EnvDefault`
(a ``str``): argparse runs the option's type on a string default only when the command that has
the option is parsed, so a bad value in the variable fails that command alone, and the message
names the variable rather than the option the user did not type.

Lives beside the HTTP layer (which listens) and below both the CLI and the simulators, which
share it; it imports nothing but the standard library.
"""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Callable

PORT_MAX = 65535

# The errors of bind(2) that mean "choose another address or port", not a bug.
LISTEN_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


class EnvDefault(str):
    """An option's default read from the environment, remembering the variable's name."""

    variable: str

    def __new__(cls, value: str, variable: str) -> EnvDefault:
        text = super().__new__(cls, value)
        text.variable = variable
        return text


def env_default(variable: str) -> EnvDefault | None:
    """The variable's value as an option default, or None when it is unset or empty."""
    value = os.environ.get(variable)
    return EnvDefault(value, variable) if value else None


def port_type(*, any_free: bool) -> Callable[[str], int]:
    """An argparse type: a port number, 1..65535, or also 0 (any free port) when ``any_free``.

    ``any_free`` is for servers that report the port they got (the gateway's and the
    simulators' "listening on" line); a metrics port must be one Prometheus is told, so 0 is
    refused there.
    """
    low = 0 if any_free else 1
    allowed = "0 (any free port) to 65535" if any_free else "1 to 65535"

    def port(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if low <= value <= PORT_MAX:
            return value
        given = f"${text.variable}={str(text)!r}" if isinstance(text, EnvDefault) else repr(text)
        raise argparse.ArgumentTypeError(f"{given} is not a port number from {allowed}")

    port.__name__ = "port"  # argparse names the type in some messages
    return port


def is_listen_error(exc: OSError) -> bool:
    """A bind that failed on the address itself (not a file, such as a TLS key, that failed)."""
    return exc.errno in LISTEN_ERRNOS and exc.filename is None


def listen_hint(host: str, port: int, exc: OSError, *, option: str) -> str:
    """The one line for a port we could not listen on, naming the option that sets it (an
    address that is not this host's is the host setting's fault, not the port's)."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is in use by another process — stop that process or "
            f"choose another with {option}"
        )
    if exc.errno == errno.EACCES:
        return f"not permitted to listen on port {port} on {host} — choose another with {option}"
    return (
        f"{host} is not an address of this host — listen on one of its own (127.0.0.1, or "
        "0.0.0.0 for all)"
    )
