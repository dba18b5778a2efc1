"""``hookstream console``: a small web console for operators (issue 13, "A web console").

Server-rendered pages (aiohttp), no build step: the flows overview (activity charts read from
Kafka, consumer lag from the broker, breaker and sink-gate states scraped from the processes'
``/metrics``), event search (the journey of :mod:`streams.ops.trace`), the DLQ (filter, inspect,
redrive through :mod:`streams.ops.dlq`, once each) and a live view of results (Server-Sent
Events). It reads Kafka itself, so it shows the same whatever the number of workers.

Modules: :mod:`.security` (bind rule, token, CSRF, headers), :mod:`.html` (escaping, layout,
SVG charts), :mod:`.activity`, :mod:`.lag` and :mod:`.search` (what Kafka says),
:mod:`.scrape` (what the processes' metrics say), :mod:`.pages` and :mod:`.dlq_pages` (the
handlers), :mod:`.live` (the results stream), :mod:`.app` (the application and ``serve``).
"""
