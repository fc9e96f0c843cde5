"""Sharing ports: access levels per port, share links and machine tokens (SPEC 12).

Below the resource tree (L{portproxy.web}) and above sign-in (L{portproxy.auth}), whose
password material its keys derive from.
"""
