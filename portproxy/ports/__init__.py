"""The machine's listening ports, for the home page and its API (SPEC 13).

Discovery (which ports listen, and which process owns each), the HTTP probe, and the
watcher that runs them only while someone is looking.
"""
