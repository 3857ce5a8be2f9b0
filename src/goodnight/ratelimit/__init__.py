"""Abuse limits: per client address, per user and per username, on Redis or in process memory.

The pieces: ``policies`` (which limits exist), ``client_ip`` (whose address a request counts against),
``windows`` (the ``limits`` library's moving windows on Redis or in memory), ``limiter`` (policies on
windows, falling back to memory while Redis is away) and ``middleware`` (the HTTP side: 429 and headers).
"""
