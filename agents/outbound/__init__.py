"""Every HTTP call hookstream makes out: the shared session and error mapping (``http``),
the SSRF guard on where we may call (``egress_guard``), a flow's ``lookups``, and the ``retry``
policy.
"""
