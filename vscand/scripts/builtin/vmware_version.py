"""``vmware-version``: the VMware SOAP API's ``RetrieveServiceContent`` (vCenter, ESX, ESXi).

Rule: likely HTTP (``shortport.http``: ports 80, 443, 631, 7080, 8080, 8443, …
or services http, https, …), intensity >= 7, port not excluded by the probe
file. Sends NSE's ``http.post`` of the RetrieveServiceContent envelope to
``/sdk`` (tryssl: TLS first on a TLS port). A 200 response whose body has a
``<name>`` element is VMware's: while the port has no product, the product
becomes ``<name> SOAP API`` and the version ``<version>`` (cleared when
absent); a CPE ``cpe:/o:vmware:<name without "VMware ">:<version>`` is added
(``nil`` where the version is missing, as Lua's ``format`` prints it); hard
match. Output (a table, in this order): Server version, Build, Locale
version, OS type, Product Line ID — absent elements left out, except inside
the two joined ones where Lua prints ``nil``.
"""

from __future__ import annotations

import re

from vscand.output.script_output import ScriptOutput, Table
from vscand.scripts import nsehttp
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.shortport import likely_http

__all__ = ["REQUEST_BODY", "VmwareVersion", "parse_service_content"]

REQUEST_BODY = (
    b'<soap:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    b' xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soap:Header><operationID>00000001-00000001</operationID></soap:Header>"
    b'<soap:Body><RetrieveServiceContent xmlns="urn:internalvim25">'
    b'<_this xsi:type="ManagedObjectReference" type="ServiceInstance">ServiceInstance</_this>'
    b"</RetrieveServiceContent></soap:Body></soap:Envelope>"
)
_ELEMENTS = ("name", "version", "build", "localeVersion", "localeBuild", "osType", "productLineId")


def _element(body: bytes, name: str) -> str | None:
    found = re.search(b"<" + name.encode() + b">([^<]*)</" + name.encode() + b">", body)
    return found.group(1).decode("latin-1") if found else None


def parse_service_content(body: bytes) -> dict[str, str | None] | None:
    """The first of each element NSE reads (None: no ``<name>``, not VMware's)."""
    found = {name: _element(body, name) for name in _ELEMENTS}
    return found if found["name"] is not None else None


def _lua(value: str | None) -> str:
    return "nil" if value is None else value


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "." for c in text)


class VmwareVersion(BaseScript):
    name = "vmware-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        if ctx.intensity < 7 or ctx.is_excluded(port.number, port.protocol):
            return False
        return likely_http(port)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        response = await nsehttp.post(run.exchange, run.port, "/sdk", REQUEST_BODY)
        if response.status != 200 or response.body is None:
            return None
        found = parse_service_content(response.body)
        if found is None:
            return None
        name, version = found["name"] or "", found["version"]
        bare = re.sub(r"^[Vv][Mm][Ww]are ", "", name, count=1)
        cpe = _printable(f"cpe:/o:vmware:{bare}:{_lua(version)}")
        keep = run.port.product is not None
        run.set_version(
            VersionUpdate(
                product=KEEP if keep else f"{name} SOAP API",
                version=KEEP if keep else version,
                cpe=(*run.port.cpe, cpe),
            )
        )
        table = Table()
        table["Server version"] = f"{name} {_lua(version)}"
        table["Build"] = found["build"]
        table["Locale version"] = f"{_lua(found['localeVersion'])} {_lua(found['localeBuild'])}"
        table["OS type"] = found["osType"]
        table["Product Line ID"] = found["productLineId"]
        return ScriptOutput(table=table)
