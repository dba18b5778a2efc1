"""hookstream's own HTTP/1.1 server layer (on llhttp through httptools), fenced.

``message`` (request, response, codecs), ``protocol`` (one connection), ``server`` (listening,
timeouts on an injected ``schemas.clock.Clock``, graceful close), ``ports`` (listen ports as a
user gives them, bind errors in words, for every listening command). It imports only
``schemas``: the gateway is its one application. Why it exists: docs/decisions/0001.
"""
