"""The AI stage's parts: the request and answer (``provider``), one client per API
(``openai``, ``anthropic``, picked by ``clients``), rate budgets, the circuit breaker, output
validation, and ``task``, which runs one flow's model call with fallbacks and the cache.
"""
