"""The ``hookstream`` command: the only place that wires the components together.

``main`` builds the parser and runs the processes (gateway, worker, sinks, config check,
schemas, simulators), ``ops`` and ``pubsub`` the operator and client commands, ``sign`` the
signed curl command, ``exits`` the exit statuses, ``topics`` the short topic names. Each command
imports what it needs when it runs, so ``hookstream --help`` stays fast.
"""
