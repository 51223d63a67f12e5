"""``openlookup-info``: an OpenLookup (network key-value store) server's hello banner.

Rule: port 5850 or service ``openlookup`` (tcp, open or open|filtered,
intensity >= 7, not excluded). Reads the banner (``comm.get_banner``: one
chunk, plain TCP first on a named port, else as ``comm.bestoption`` orders
them) and parses it as ``proto.nson`` does: the first netstring must be an
NSON dictionary with ``method`` = ``hello``. Sets (hard match) name
``openlookup`` and, when the options have ``version``, the version — the raw
NSON value as NSE keeps it (``s2.7`` for the string ``2.7``). No output: NSE
returns its options only when they have integer keys, and they never do.
"""

from __future__ import annotations

from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import CONNECT_TIMEOUT, REQUEST_TIMEOUT, bestoption
from vscand.scripts.exchange import Exchange, ExchangeError
from vscand.scripts.proto.nson import hello_options
from vscand.scripts.shortport import version_port_or_service

__all__ = ["OpenlookupInfo", "get_banner"]

_rule = version_port_or_service([5850], ["openlookup"])


async def get_banner(exchange: Exchange, port: PortView) -> bytes | None:
    """``comm.get_banner``: connect (the better way first), read one chunk."""
    for option in dict.fromkeys(bestoption(port)):
        try:
            conn = await exchange.connect(tls=option == "ssl", timeout=CONNECT_TIMEOUT)
        except ExchangeError:
            continue
        try:
            return await conn.receive(REQUEST_TIMEOUT)
        except ExchangeError:
            continue
        finally:
            conn.close()
    return None


class OpenlookupInfo(BaseScript):
    name = "openlookup-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> None:
        banner = await get_banner(run.exchange, run.port)
        if banner is None:
            return
        options = hello_options(banner)
        if options is None:
            return
        version = options.get(b"version")
        run.set_version(
            VersionUpdate(
                name="openlookup",
                version=version.decode("latin-1") if version is not None else KEEP,
            )
        )
