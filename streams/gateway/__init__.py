"""Webhook intake: the ``hookstream gateway`` process.

``routes`` answers each request (verify, limit, wrap as a CloudEvent, write, 202 after the
ack), ``server`` runs it on the HTTP layer, ``signatures/`` verifies each sender's scheme,
``ingest`` builds the event, ``limits`` (per-source token buckets, 429) and ``client_access`` (the
client address behind trusted proxies, allowlists) decide who may send and how fast,
``backpressure`` bounds the writes in flight (503 beyond them), ``openapi`` documents the answers.
"""
