"""The short names ``hookstream tail`` and the other tools take for the topics hookstream owns,
in the order the CLI lists them: written out here, not read from the code, so a test that
compares against it fails when a topic is added, removed or reordered."""

from __future__ import annotations

SHORT_NAMES = [
    "events",
    "enriched",
    "results",
    "dlq",
    "receipts",
    "delivered",
    "dlq-redriven",
    "ai-batch",
    "dedupe",
    "ai-cache",
    "replay-jobs",
    "ai-batch-jobs",
]
