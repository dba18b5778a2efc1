"""Simulators for development and tests: an OpenAI-compatible model (``ai_sim``), a
CRM REST API (``crm_sim``) and a Slack incoming webhook (``slack_sim``), each a real HTTP server
in its own process (``hookstream dev ...``).
"""
