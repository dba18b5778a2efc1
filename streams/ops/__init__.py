"""Operator tools over the topics: ``replay`` a time or offset window, and the DLQ
(``dlq``: list, show, redrive once). The CLI (``streams.cli``) exposes them.
"""
