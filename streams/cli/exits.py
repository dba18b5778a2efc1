"""The ``hookstream`` command's exit statuses, and the one-line messages of expected failures.

A script that runs ``hookstream`` can tell the failures apart without reading stderr:

==== =====================================================================================
0    done (also: stdout was closed by its reader, e.g. ``hookstream tail … | head``)
1    not done, by choice (``replay`` not confirmed)
2    bad input: the config file, an argument, an input file (argparse also exits 2)
3    Kafka cannot be reached (or did not answer in time)
4    a topic does not exist on the broker
5    a port cannot be listened on (in use, not permitted, not an address of this host)
130  interrupted (Ctrl-C)
==== =====================================================================================

Every expected failure is one line on stderr, ``hookstream: <what> — <what to do>``, never a
traceback: a traceback means a bug.
"""

from __future__ import annotations

import errno
import sys

EXIT_OK = 0
EXIT_DECLINED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_NO_TOPIC = 4
EXIT_CANNOT_LISTEN = 5
EXIT_INTERRUPTED = 130

# The errors of bind(2) that mean "choose another address or port", not a bug.
LISTEN_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})

EPILOG = (
    "exit status: 0 done (or stdout closed by its reader), 1 declined (replay not confirmed), "
    "2 bad input (config file, argument, input file), 3 Kafka unreachable, "
    "4 topic does not exist, 5 cannot listen on the port, 130 interrupted"
)


def fail(message: str, status: int) -> int:
    """Print ``hookstream: <message>`` on stderr, one line, and return ``status``."""
    print(f"hookstream: {message}", file=sys.stderr)
    return status


def is_listen_error(exc: OSError) -> bool:
    """A bind that failed on the address itself (not a file, such as a TLS key, that failed)."""
    return exc.errno in LISTEN_ERRNOS and exc.filename is None


def listen_hint(host: str, port: int, exc: OSError, *, option: str) -> str:
    """The one line for a port we could not listen on, naming the option that sets it."""
    if exc.errno == errno.EADDRINUSE:
        what = f"port {port} on {host} is in use by another process"
    elif exc.errno == errno.EACCES:
        what = f"not permitted to listen on port {port} on {host}"
    else:
        what = f"{host} is not an address of this host"
    return f"{what} — stop that process or choose another with {option}"
