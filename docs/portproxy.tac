# A .tac file that runs portproxy under twistd:  twistd -ny docs/portproxy.tac
#
# It builds the same service as `twist portproxy`, from the same options, so anything
# the command line accepts can go in the list below. Environment variables (PASSWORD,
# HASHED_PASSWORD, PORTPROXY_DISABLE_PROXY) are read as usual.
import os

from twisted.application import service

from portproxy.tap import Options, makeService

options = Options()
options.parseOptions(
    [
        "--listen", os.environ.get("PORTPROXY_LISTEN", "tcp:8080:interface=127.0.0.1"),
        "--auth", os.environ.get("PORTPROXY_AUTH", "password"),
    ]
)

application = service.Application("portproxy")
makeService(options).setServiceParent(application)
