"""Connections, below HTTP: admission limits per listener and address (L{limits}) and
writes that leave at once instead of at the end of the reactor turn (L{eager}).

Both are used by the HTTP server side (L{portproxy.web}), the upstream side
(L{portproxy.http}) and the WebSocket bridge, so they sit under all three.
"""
