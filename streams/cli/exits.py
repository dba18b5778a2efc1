"""The ``hookstream`` command's exit statuses, and the one-line messages of expected failures.

A script that runs ``hookstream`` can tell the failures apart without reading stderr:

==== =====================================================================================
0    done (also: stdout was closed by its reader, e.g. ``hookstream tail … | head``)
1    not done, by choice (``replay`` not confirmed)
2    bad input: the config file, an argument, an input file (argparse also exits 2)
3    Kafka cannot be reached (or did not answer in time); ``flow test``: a model or lookup it
     called did not answer within ``--timeout-s``
4    a topic does not exist on the broker
5    a port cannot be listened on (in use, not permitted, not an address of this host)
6    not found (``trace``: no record of the event in the window searched)
7    a test failed (``flow test --all``: a flow test's expectation did not match)
8    replaced (``batcher``: a newer batcher on the same prefix fenced this one)
130  interrupted (Ctrl-C)
==== =====================================================================================

Every expected failure is one line on stderr, ``hookstream: <what> — <what to do>``, never a
traceback: a traceback means a bug. A port that cannot be listened on is worded by
:func:`streams.http.ports.listen_hint`, which the simulators share.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_DECLINED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_NO_TOPIC = 4
EXIT_CANNOT_LISTEN = 5
EXIT_NOT_FOUND = 6
EXIT_TEST_FAILED = 7
EXIT_REPLACED = 8
EXIT_INTERRUPTED = 130

EPILOG = (
    "exit status: 0 done (or stdout closed by its reader), 1 declined (replay not confirmed), "
    "2 bad input (config file, argument, input file), 3 Kafka unreachable, "
    "4 topic does not exist, 5 cannot listen on the port, 6 not found (trace), "
    "7 a flow test failed, 8 replaced (batcher fenced by a newer one), 130 interrupted"
)


def fail(message: str, status: int) -> int:
    """Print ``hookstream: <message>`` on stderr, one line, and return ``status``."""
    print(f"hookstream: {message}", file=sys.stderr)
    return status
