"""Sink connectors: the base (``add``/``flush``, batching), the kinds (``http``,
``slack``, ``postgres``), the outage ``gate``, the sink ``stage`` with its idempotency, and
``wiring`` to Faust agents.
"""
