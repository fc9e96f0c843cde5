"""Routing: which app a request is for, and the addresses it is known by.

Pure policy, no Twisted and no Autobahn (tests/test_layout.py checks it): route
parsing (L{routes}), the one C{host[:port]} parser (L{hosts}), proxy-domain patterns
(L{domains}) and the public URL of an app for each kind of mount (L{publicurl}).
"""
