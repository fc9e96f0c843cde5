"""The process around the proxy: assembling an instance from a Config (L{app}),
listening and shutting down (L{service}), TLS certificates (L{tls}) and TLS listeners
(L{tlslistener}), and several worker processes: the supervisor (L{supervisor}), one
worker (L{worker}) and what the two hand over (L{handoff}).
"""
