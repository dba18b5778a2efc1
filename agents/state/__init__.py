"""What the worker and sinks remember across restarts, each in a compacted Kafka topic:
``durable_map`` (dedupe marks and the AI answer cache), ``delivered`` (what the sinks delivered),
``recovery`` (results already written for events about to be redone). Why not Faust tables:
docs/decisions/0002.
"""
