"""``oracle-tns-version``: the VSNNUM of an Oracle TNS listener's answer, decoded.

Rule: the port has no version yet, and is 1521-1523 or named ``oracle-tns`` (tcp,
open or open|filtered, not excluded, intensity >= 7).

Action: the answer to the ``oracle-tns`` probe kept in the service fingerprint,
else the same probe sent by ``comm.exchange`` (one read). From byte 12 on it
looks for ``(VSNNUM=digits)`` and ``(ERR=digits)``. VSNNUM is decoded as NSE
does (Lua integer shifts: ``>>24``, ``>>20 & 0xF``, ``>>12 & 0xFF``, ``>>8 &
0xF``, ``& 0xFF``); a number Lua cannot hold as an integer (2^63 and over) makes
the script die, as it dies in Lua.

Version fields (hard match, only when either was found): product ``Oracle TNS
listener``, version = the decoded VSNNUM and ``cpe:/a:oracle:database_server:V``
appended to the CPEs; extrainfo = the error's name (1189 unauthorized, 1194
insecure transport, 12154 unknown identifier, 12504 requires service name, 12505
unknown sid, 12514 unknown service name) or ``error: N``. No output.
"""

from __future__ import annotations

import re
from dataclasses import replace

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import exchange
from vscand.scripts.fingerprints import fingerprint_response
from vscand.scripts.shortport import version_port_or_service

__all__ = ["ERR_CODES", "PROBE", "OracleTnsVersion", "decode_vsnnum", "parse_answer"]

#: the ``oracle-tns`` probe of nmap-service-probes (what NSE sends)
PROBE = (
    b"\x00Z\x00\x00\x01\x00\x00\x00\x016\x01,\x00\x00\x08\x00\x7f\xff\x7f\x08\x00\x00\x00"
    b"\x01\x00 \x00:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x004\xe6"
    b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00(CONNECT_DATA=(COMMAND=version))"
)

ERR_CODES = {
    "1189": "unauthorized",
    "1194": "insecure transport",
    "12154": "unknown identifier",
    "12504": "requires service name",
    "12505": "unknown sid",
    "12514": "unknown service name",
}

_VSNNUM = re.compile(rb"\(VSNNUM=([0-9]+)\)")
_ERR = re.compile(rb"\(ERR=([0-9]+)\)")
#: Lua's ``match(s, pattern, 12)``: the search starts at the 12th byte
_INIT = 11

_rule = version_port_or_service([1521, 1522, 1523], ["oracle-tns"])


def decode_vsnnum(digits: str) -> str:
    """``tonumber`` then Lua's 64-bit shifts; raises ScriptFailed where Lua errors."""
    significant = digits.lstrip("0")
    if len(significant) > 19 or int(significant or "0") >= 1 << 63:
        # Lua reads it as a float: "number has no integer representation"
        raise ScriptFailed("VSNNUM is no Lua integer")
    value = int(significant or "0")
    return (
        f"{value >> 24}.{value >> 20 & 0xF}.{value >> 12 & 0xFF}.{value >> 8 & 0xF}.{value & 0xFF}"
    )


def parse_answer(response: bytes) -> tuple[str | None, str | None]:
    """(the VSNNUM digits, the ERR digits) found from byte 12 on, each None when absent."""
    vsnnum, err = _VSNNUM.search(response, _INIT), _ERR.search(response, _INIT)
    return (
        vsnnum.group(1).decode() if vsnnum else None,
        err.group(1).decode() if err else None,
    )


class OracleTnsVersion(BaseScript):
    name = "oracle-tns-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return not port.version and _rule(port, ctx)

    async def action(self, run: ScriptRun) -> None:
        response = fingerprint_response(run.port.fingerprint, "oracle-tns")
        if response is None:
            response = await exchange(run.exchange, PROBE)
            if response is None:
                return None
        vsnnum, errno = parse_answer(response)
        if vsnnum is None and errno is None:
            return None
        update = VersionUpdate()
        if vsnnum is not None:
            decoded = decode_vsnnum(vsnnum)
            update = replace(
                update,
                product="Oracle TNS listener",
                version=decoded,
                cpe=(*run.port.cpe, f"cpe:/a:oracle:database_server:{decoded}"),
            )
        if errno is not None:
            update = replace(update, extrainfo=ERR_CODES.get(errno, f"error: {errno}"))
        run.set_version(update)
        return None
