"""The topic catalogue: every topic hookstream uses is named here and nowhere else.

Names are ``<prefix>.<role>`` with the prefix from the config (``kafka.topic_prefix``), so
several deployments — or test runs — can share one cluster without seeing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENTS = "events"
ENRICHED = "enriched"
RESULTS = "results"
DLQ = "dlq"
# The stages that write dead letters (DeadLetter.stage): the worker's enrich and AI stages,
# the sinks, and ``hookstream replay`` (a record the topic refuses with the replay header).
DEAD_LETTER_STAGES = ("enrich", "ai", "sink", "replay")
RECEIPTS = "receipts"
# The sinks' delivery memory and the DLQ tool's redrive memory: compacted, keyed by what they
# remember, so a restarted process reads back the latest entry per key.
DELIVERED = "delivered"
DLQ_REDRIVEN = "dlq-redriven"
# The requests of flows with ai.mode: batch, from the worker to ``hookstream batcher``.
AI_BATCH = "ai-batch"
ROLES = (EVENTS, ENRICHED, RESULTS, DLQ, RECEIPTS, DELIVERED, DLQ_REDRIVEN, AI_BATCH)
_WEEK_MS = 7 * 24 * 3600 * 1000
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    DELIVERED: {"cleanup.policy": "compact,delete", "retention.ms": str(_WEEK_MS)},
    DLQ_REDRIVEN: {"cleanup.policy": "compact"},
}


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    def name(self, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown topic role {role!r}")
        return f"{self.prefix}.{role}"

    @property
    def events(self) -> str:
        return self.name(EVENTS)

    @property
    def enriched(self) -> str:
        return self.name(ENRICHED)

    @property
    def results(self) -> str:
        return self.name(RESULTS)

    @property
    def dlq(self) -> str:
        return self.name(DLQ)

    @property
    def receipts(self) -> str:
        return self.name(RECEIPTS)

    @property
    def delivered(self) -> str:
        return self.name(DELIVERED)

    @property
    def dlq_redriven(self) -> str:
        return self.name(DLQ_REDRIVEN)

    def all(self) -> list[str]:
        return [self.name(role) for role in ROLES]

    # The worker's compacted state topics; created by agents.state.durable_map.DurableMap
    # (compact,delete with retention = TTL), not by streams.kafka.admin.ensure_topics.
    @property
    def dedupe(self) -> str:
        return f"{self.prefix}.dedupe"

    @property
    def ai_cache(self) -> str:
        return f"{self.prefix}.ai-cache"

    # The journal of ``hookstream replay --batch`` (streams.ops.replay_batch): each provider
    # job it submitted, keyed by the replay id; created by the replay when missing.
    @property
    def replay_jobs(self) -> str:
        return f"{self.prefix}.replay-jobs"

    # Flows with ai.mode: batch: the worker's rendered requests for ``hookstream batcher``
    # (keyed like the event), and the batcher's journal of the jobs it submitted.
    @property
    def ai_batch(self) -> str:
        return self.name(AI_BATCH)

    @property
    def ai_batch_jobs(self) -> str:
        return f"{self.prefix}.ai-batch-jobs"
