"""The C{twist portproxy} / C{twistd portproxy} plugin.

Kept trivial and lazy: C{ServiceMaker} imports L{portproxy.tap} only when the
subcommand runs, so listing plugins never imports the reactor or Autobahn.
"""

from twisted.application.service import ServiceMaker

portproxy = ServiceMaker(
    "portproxy",
    "portproxy.tap",
    "Open web apps on local ports through one signed-in address "
    "(/proxy/<port>/, /absproxy/<port>/, <port>.<domain>).",
    "portproxy",
)
