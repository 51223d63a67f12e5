"""``https-redirect``: an HTTP port that redirects to HTTPS on the same port speaks TLS.

Runs (intensity >= 7) on likely-HTTP ports (``shortport.http``) not already
known as TLS. Reads the responses the fingerprint kept to GetRequest,
HTTPOptions, FourOhFourRequest and NULL (NSE's ``get_response``); without
any, sends ``GET / HTTP/1.0`` itself, TLS or not as ``comm.tryssl`` orders
them (an answer over TLS already proves it: tunnel ``ssl``). A ``3xx``
response whose ``Location`` is ``https://`` to this port (443 when none) on
the scanned address, the target's name, or no host makes the port's tunnel
``ssl``: a soft match (probed, conf 10; the rest of the port kept). No output.
"""

from __future__ import annotations

import re

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import tryssl
from vscand.scripts.fingerprints import FingerprintError, nse_get_response
from vscand.scripts.nseurl import ascii_host, parse_url
from vscand.scripts.shortport import likely_http

__all__ = ["FINGERPRINT_PROBES", "HttpsRedirect", "redirects_to_tls"]

FINGERPRINT_PROBES = ("GetRequest", "HTTPOptions", "FourOhFourRequest", "NULL")
_REDIRECT = re.compile(rb"HTTP/1.[01] 3[0-9][0-9]", re.DOTALL)
_LOCATION = re.compile(rb"\n[Ll][Oo][Cc][Aa][Tt][Ii][Oo][Nn]:[ \t]*(.*?)\r?\n", re.DOTALL)


def redirects_to_tls(response: bytes, port: PortView, release: str = "7.93") -> bool:
    """Is ``response`` a redirect to ``https://`` on this very port and host?"""
    if not _REDIRECT.match(response):
        return False
    found = _LOCATION.search(response)
    if found is None:
        return False
    parsed = parse_url(found.group(1).decode("latin-1"))
    if parsed.scheme != "https" or (parsed.port if parsed.port is not None else 443) != port.number:
        return False
    if parsed.host is None:
        return True
    name = ascii_host(parsed.host, release)
    # host.name (reverse DNS) is empty in our scans, as with nmap -n
    return name is not None and name in (port.address, port.target_name)


class HttpsRedirect(BaseScript):
    name = "https-redirect"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return port.tunnel != "ssl" and likely_http(port) and ctx.intensity >= 7

    async def action(self, run: ScriptRun) -> None:
        port = run.port
        responses: list[bytes] = []
        if port.fingerprint:
            for probe in FINGERPRINT_PROBES:
                try:
                    kept = nse_get_response(port.fingerprint, probe)
                except FingerprintError as exc:
                    raise ScriptFailed(str(exc)) from exc
                if kept is not None:
                    responses.append(kept)
        if not responses:
            answer, option = await tryssl(run.exchange, port, b"GET / HTTP/1.0\r\n\r\n")
            if answer is None:
                return None
            if option == "ssl":
                run.set_version(VersionUpdate(tunnel="ssl"), "softmatched")
                return None
            responses.append(answer)
        for response in responses:
            if redirects_to_tls(response, port, run.release):
                run.set_version(VersionUpdate(tunnel="ssl"), "softmatched")
                return None
        return None
