"""Sink connectors: the base (``add``/``flush``, batching), the kinds (``http``,
``slack``, ``postgres``), the outage ``gate``, the sink ``stage`` with its idempotency, the
``consumer`` that feeds the stages, and the process's ``wiring``.
"""
