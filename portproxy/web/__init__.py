"""The client-facing web server: the site, its requests and channels (L{site}), the
root of the resource tree that dispatches each request and gates it behind sign-in
(L{root}), and the pages portproxy answers itself: the start page (L{home}) and
C{/healthz} (L{health}).
"""
