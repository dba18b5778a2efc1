"""The leaf of hookstream: what every other package shares, and nothing that does I/O.

Config models and their loader, topic and header names, the event and result models, the one
exception tree, templates and the JSON codec. It imports nothing of ours and no Kafka, Faust or
HTTP client (import-linter checks both in ``make lint``), so a model or a name can be used from
any layer without dragging a client in.
"""
