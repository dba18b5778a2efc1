"""hookstream's own HTTP/1.1 server layer (on llhttp through httptools), fenced.

``message`` (request, response, codecs), ``protocol`` (one connection), ``server`` (listening,
timeouts, graceful close), ``clock`` (the time source tests replace). It imports only
``schemas``: the gateway is its one application. Why it exists: docs/decisions/0001.
"""
