"""Prometheus exposition (``/metrics``), lock-free metrics updated from one event loop, and
OpenTelemetry spans when configured (:mod:`streams.metrics.tracing`)."""
