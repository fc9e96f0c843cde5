"""HTTP proxying: from a client's request to the app's response and back.

The pure half (no Twisted; tests/test_layout.py checks it): the HTTP/1.1 wire format
(L{wire}), the response reader's state machine (L{response_reader}), the header policy
(L{headers}), the rewriting of C{Location} and C{Set-Cookie} (L{rewrite}, L{cookies},
L{setcookie}) and the error pages (L{errorpages}).

The Twisted half: the upstream connections and their pool (L{upstream}), the engine
that runs one exchange per request (L{engine}), streamed request bodies (L{uploads})
and the hardened HTTP/2 server side (L{http2}).
"""
