"""Prometheus exposition (``/metrics``) and lock-free metrics updated from one event loop."""
