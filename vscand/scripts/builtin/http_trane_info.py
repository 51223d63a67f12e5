"""``http-trane-info``: a Trane Tracer SC controller's ``/evox`` documents.

Runs (intensity >= 7) on likely-HTTP ports (``shortport.http``). Stops when the
server answers 200 to made-up URIs (``identify_404``). ``GET /evox/about``
(``http.get``: redirects followed as NSE follows them): a status line (or the
error text standing in for one) containing ``200`` whose body has ``serverName" val=...`` gives
nine values (``KEY" val=VALUE/>``, quotes removed): serverName, serverTime,
serverBootTime, vendorName, productName, productVersion, kernelVersion,
hardwareType, hardwareSerialNumber (one missing: NSE's Lua dies). Then
``GET /evox/equipment/installedSummary``: with ``200`` and no ``Error code:
00017``, a ``devices`` list, one entry per ``equipmentUri`` (equipmentUri,
displayName, deviceName, equipmentFamily, roleDocument, isOffline, each
``Not available`` when absent). A status line with ``Error`` on the second
request ends with that message; otherwise the port becomes name ``http``,
product = productName, version = productVersion, devicetype = hardwareType,
CPE ``cpe:/h:<vendorName>:<productName>`` added; a hard match.
"""

from __future__ import annotations

import re

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.nsehttp import get
from vscand.scripts.nsehttp404 import all_uris_200
from vscand.scripts.shortport import likely_http

__all__ = ["ABOUT_KEYS", "DEVICE_KEYS", "HttpTraneInfo", "devices"]

ABOUT_KEYS = (
    "serverName", "serverTime", "serverBootTime", "vendorName", "productName",
    "productVersion", "kernelVersion", "hardwareType", "hardwareSerialNumber",
)  # fmt: skip
DEVICE_KEYS = (
    "equipmentUri", "displayName", "deviceName", "equipmentFamily", "roleDocument", "isOffline",
)  # fmt: skip
XML_PROBLEM = "Problem with XML parsing of /evox/about"
NETWORK_ERROR = "Request returned a network error."


def _value(body: bytes, key: str, start: int = 0) -> str | None:
    found = re.compile(re.escape(key.encode()) + rb'" val=([^<]*)/>').search(body, start)
    return None if found is None else found.group(1).decode("latin-1").replace('"', "")


def devices(body: bytes) -> Table:
    """The ``devices`` list of an installedSummary body (NSE's loop over
    ``equipmentUri`` occurrences, each search starting at the previous one)."""
    last = body.rfind(b"equipmentUri")
    if last < 0:
        raise ScriptFailed("no equipmentUri")  # NSE concatenates nil: the script dies
    last_end = last + len(b"equipmentUri")  # Lua's 1-based end index
    listed = Table()
    position = 1  # 1-based, as the Lua loop counts
    while position < last_end:
        device = Table()
        for key in DEVICE_KEYS:
            value = _value(body, key, position - 1)
            device[key] = value if value is not None else "Not available"
        listed.append(device)
        at = body.find(b"equipmentUri", position - 1)
        if at < 0:
            break
        position = at + len(b"equipmentUri")
    return listed


class HttpTraneInfo(BaseScript):
    name = "http-trane-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return likely_http(port) and ctx.intensity >= 7

    async def action(self, run: ScriptRun) -> str | ScriptOutput | None:
        port = run.port
        if await all_uris_200(run.exchange, port):
            return None
        about = await get(run.exchange, port, "/evox/about")
        if "200" not in (about.status_line or ""):
            return None
        if about.body is None:
            # an error text holding "200" (a quoted status line): NSE indexes a nil body
            raise ScriptFailed("no body")
        body = about.body
        if _value(body, "serverName") is None:
            return XML_PROBLEM
        output = Table()
        for key in ABOUT_KEYS:
            value = _value(body, key)
            if value is None:
                raise ScriptFailed(f"no {key}")  # NSE concatenates nil: the script dies
            output[key] = value
        summary = await get(run.exchange, port, "/evox/equipment/installedSummary")
        summary_line = summary.status_line or ""
        if "200" in summary_line:
            if summary.body is None:
                raise ScriptFailed("no body")  # as above
            if b"Error code: 00017" not in summary.body:
                output["devices"] = devices(summary.body)
        if "Error" in summary_line:
            return NETWORK_ERROR
        vendor, product = output["vendorName"], output["productName"]
        assert isinstance(vendor, str) and isinstance(product, str)
        run.set_version(
            VersionUpdate(
                name="http",
                product=product,
                version=output["productVersion"],  # type: ignore[arg-type]
                devicetype=output["hardwareType"],  # type: ignore[arg-type]
                cpe=(*port.cpe, f"cpe:/h:{vendor}:{product}"),
            )
        )
        return ScriptOutput(table=output)
