"""What every AI provider client shares: the request, the answer, the client protocol.

A flow's task builds one :class:`ChatRequest` per event; the client for the provider's
``kind`` turns it into that API's wire format. Both APIs return a :class:`Completion` with the
answer's text (JSON, validated later by :mod:`agents.ai.output`) and the token usage the
budgets and the cost are corrected with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas.config_ai import ProviderConfig
from schemas.events import TokenUsage

STAGE = "ai"
# Characters per token for the estimate made before a call (budgets); corrected with usage.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    system: str
    prompt: str
    schema_name: str
    schema: dict[str, Any]
    temperature: float
    max_tokens: int
    # Extra turns after the prompt: (role, text), e.g. a re-ask after an invalid answer.
    followups: tuple[tuple[str, str], ...] = field(default=())
    # cache_key's answers by provider: the stage looks the answer up before the call and
    # writes it under the same key after, one sha256 for both (a copy made with
    # dataclasses.replace starts empty: its model may differ).
    _keys: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def estimated_tokens(self) -> int:
        """Prompt tokens (chars / 4) plus the completion allowance, as providers count TPM."""
        chars = len(self.system) + len(self.prompt) + sum(len(t) for _, t in self.followups)
        return chars // CHARS_PER_TOKEN + 1 + self.max_tokens

    def cache_key(self, provider: str) -> str:
        """Identity of the request for the answer cache: provider, model, prompt, parameters
        (not the follow-up turns: a re-asked request's answer is cached under the first's)."""
        known = self._keys.get(provider)
        if known is not None:
            return known
        canonical = orjson.dumps(
            [
                provider,
                self.model,
                self.system,
                self.prompt,
                self.schema,
                self.temperature,
                self.max_tokens,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
        key = self._keys[provider] = hashlib.sha256(canonical).hexdigest()
        return key

    def reask(self, answer: str, problems: str) -> ChatRequest:
        """The same request, continued with the invalid answer and what is wrong with it."""
        correction = (
            f"That answer is not valid: {problems}. Answer again with only a JSON object "
            "that fits the schema."
        )
        return ChatRequest(
            model=self.model,
            system=self.system,
            prompt=self.prompt,
            schema_name=self.schema_name,
            schema=self.schema,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            followups=(*self.followups, ("assistant", answer), ("user", correction)),
        )

    def messages(self) -> list[dict[str, str]]:
        """The user/assistant turns (without the system prompt)."""
        turns = [{"role": "user", "content": self.prompt}]
        turns += [{"role": role, "content": text} for role, text in self.followups]
        return turns


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    model: str
    usage: TokenUsage
    latency_ms: float


class ChatClient(Protocol):
    provider: ProviderConfig

    async def complete(self, request: ChatRequest) -> Completion: ...


def schema_instruction(request: ChatRequest) -> str:
    """For servers without structured output: the schema, spelled out in the system prompt."""
    schema = orjson.dumps(request.schema).decode()
    return f"Answer with only a JSON object that fits this JSON Schema: {schema}"
