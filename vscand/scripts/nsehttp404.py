"""NSE's ``http.identify_404`` on top of :mod:`vscand.scripts.nsehttp`: what a
server answers for URIs that cannot exist, and the verdict the HTTP version
scripts test ("every URI answers 200": they stop).

Three requests as NSE makes them (``/nmaplowercheck<time>`` without following
redirects, ``/NmapUpperCheck<time>`` and ``/Nmap/folder/check<time>`` following
them); the bodies compared after ``clean_404`` (times, dates, paths removed).
NSE caches the verdict per port for the scripts that come after; every script
asks here (the answers are the same unless the server changes between them).
"""

from __future__ import annotations

import time

from vscand.scripts.api import PortView
from vscand.scripts.exchange import Exchange
from vscand.scripts.nsehttp import get
from vscand.scripts.proto.nse_http import clean_404

__all__ = ["all_uris_200", "identify_404"]


async def identify_404(exchange: Exchange, port: PortView) -> tuple[bool, int | str | None]:
    """``identify_404``'s first two results: (True, the status made-up URIs get)
    or (False, why not). Three made-up URIs (the first without following
    redirects) must all answer 200 with the same cleaned body for (True, 200)."""
    stamp = int(time.time())
    first = await get(exchange, port, f"/nmaplowercheck{stamp}", redirect_ok=False)
    if first.status != 200:
        return True, first.status  # 404, one of NSE's bad responses, or anything else
    if first.body is None:
        return True, 200
    second = await get(exchange, port, f"/NmapUpperCheck{stamp}")
    third = await get(exchange, port, f"/Nmap/folder/check{stamp}")
    for nth, extra in (("second", second), ("third", third)):
        if extra.status != 200:
            became = -1 if extra.status is None else extra.status
            return False, f"HTTP 404 status changed for {nth} request (became {became})."
    clean = clean_404(first.body)
    if clean != clean_404(second.body or b"") or clean != clean_404(third.body or b""):
        return False, "Two known 404 pages returned valid and different pages"
    return True, 200


async def all_uris_200(exchange: Exchange, port: PortView) -> bool:
    """``identify_404`` answered (true, 200): the server answers 200 to any URI,
    so the HTTP scripts stop."""
    found, status = await identify_404(exchange, port)
    return found and status == 200
