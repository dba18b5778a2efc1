"""Kafka plumbing every process uses: the acks=all writers, readers, and topic creation.

``producer`` (one idempotent write, acknowledged), ``batch_writer`` (the gateway's batching
writer), ``reader`` (time/offset windows for replay and the DLQ tools), ``compacted`` (one
reader of a compacted topic for the worker's and sinks' memories) and ``admin`` (the one place
topics are created). Infrastructure: it knows Kafka, not webhooks, flows or the CLI.
"""
