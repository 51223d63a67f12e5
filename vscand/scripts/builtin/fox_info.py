"""``fox-info``: a Tridium Niagara station's hello (the Fox protocol).

Runs on ports 1911 and 4911 or service ``niagara-fox`` (tcp, intensity >= 7,
not excluded). Sends the Fox hello (``fox a 1 -1 fox hello`` with
``fox.version=s:1.0`` and ``id=i:1``) with ``comm.tryssl`` (plain or TLS, the
better guess first; one read) and takes an answer that starts with
``fox a 0`` and holds a ``{``. Every ``\\n<key>=s:<value>`` line (key:
letters, digits and dots; value: up to the end of the line) whose key is one
of hostName, hostAddress, fox.version, app.name, app.version, vm.name,
vm.version, os.name, timeZone (its text before the first ``;``), hostId,
vmUuid, brandId, fatal goes into the output table (a key seen again keeps its
place and takes the later value).

Version fields (hard match, only when the table is not empty): name
``niagara-fox``; hostname = hostName unless ``ipOps.ip_to_str`` takes it for
an address; tunnel ``ssl`` when TLS answered; the rest kept. A host name
that makes ``ipOps`` die (``:``) makes the script fail with Nmap's error
output, setting nothing.
"""

from __future__ import annotations

import re

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import tryssl
from vscand.scripts.proto.ipops import ip_to_str_accepts
from vscand.scripts.proto.luastring import LuaError
from vscand.scripts.shortport import version_port_or_service

__all__ = ["HELLO", "FoxInfo", "parse_hello"]

HELLO = b"fox a 1 -1 fox hello\n{\nfox.version=s:1.0\nid=i:1\n};;\n"
KEYS = frozenset({"hostName", "hostAddress", "fox.version", "app.name", "app.version",
                  "vm.name", "vm.version", "os.name", "timeZone", "hostId", "vmUuid",
                  "brandId", "fatal"})  # fmt: skip
_LINE = re.compile(r"\n([A-Za-z0-9.]+)=s:([^\n]+)")
_TIMEZONE = re.compile(r"[^;]+")

_rule = version_port_or_service([1911, 4911], ["niagara-fox"], ("tcp",))


def parse_hello(response: bytes) -> tuple[Table, str | None] | None:
    """The output table and the host name to set (None: keep), or None when not Fox.

    Raises LuaError where ``ipOps`` dies on the host name.
    """
    text = response.decode("latin-1")
    if "{" not in text or not text.startswith("fox a 0"):
        return None
    output = Table()
    hostname: str | None = None
    for found in _LINE.finditer(text):
        key, value = found.group(1), found.group(2)
        if key not in KEYS:
            continue
        if key == "hostName" and not ip_to_str_accepts(value):
            hostname = value
        if key == "timeZone":
            zone = _TIMEZONE.match(value)
            output[key] = zone.group(0) if zone else None
        else:
            output[key] = value
    return output, hostname


class FoxInfo(BaseScript):
    name = "fox-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        response, option = await tryssl(run.exchange, run.port, HELLO)
        if response is None:
            return None
        try:
            parsed = parse_hello(response)
        except LuaError as exc:
            raise ScriptFailed(str(exc)) from None
        if parsed is None:
            return None
        output, hostname = parsed
        if not output:
            return None
        run.set_version(
            VersionUpdate(
                name="niagara-fox",
                hostname=hostname if hostname is not None else KEEP,
                tunnel="ssl" if option == "ssl" else KEEP,
            )
        )
        return ScriptOutput(table=output)
