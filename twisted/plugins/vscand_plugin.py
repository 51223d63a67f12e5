# The twistd plugin: `twistd vscand` / `twist vscand`. Nothing else lives here: the options
# and the service are imported from vscand.daemon.tap only when the subcommand is used, so
# listing plugins never imports the reactor or the scanner. No __init__.py in twisted/ or
# twisted/plugins/ (they are namespace portions of Twisted's plugin package).
from twisted.application.service import ServiceMaker

vscand = ServiceMaker(
    "vscand", "vscand.daemon.tap", "Service and version detection daemon", "vscand"
)
