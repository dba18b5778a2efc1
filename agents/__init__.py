"""The worker and sink processes: the Faust app (``app``) and everything its agents run.

``pipeline`` wires the stages to Faust agents; ``stages/`` holds the enrich and AI stages and
the ordered runner; ``ai/`` the provider clients, budgets, breaker and the per-flow task;
``sinks/`` the sink kinds and their stage; ``state/`` the memories kept in compacted topics;
``outbound/`` every HTTP call out (lookups, the egress guard, retries); ``resources`` the
connections a process shares.
"""
