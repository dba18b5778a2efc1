"""The worker's stages, each a handler that either writes its output or dead-letters
the record: ``enrich`` (events → enriched), ``ai`` (enriched → results), their shared ``base``,
and ``runner``, which runs handlers per key in order with commits that never skip work.
"""
