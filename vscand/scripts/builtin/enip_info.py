"""``enip-info``: an EtherNet/IP device's identity (CIP List Identity).

Runs on port 44818 or services ``EtherNet-IP-2``/``EtherNet/IP-2`` (tcp and
udp, intensity >= 7, not excluded). Sends the 24-byte encapsulation header of
List Identity (command 0x63, sender context ``c1debed1``) and reads once
(``stdnse.get_timeout``: 2 s on loopback; UDP: one datagram). The answer must
start with command 0x63, be at least 27 bytes long and carry item type 0x0c
at byte 27; then, at Nmap's fixed offsets: the socket address's IPv4 address
(37), vendor id, device type, product code (little-endian 16-bit from 49),
revision major and minor, status (16-bit), serial number (32-bit), the
product name (one length byte, then the name) and the state byte.

Vendor and device type names come from the tables ``vendor_id`` and
``device_type`` of the installed Nmap's ``enip-info.nse``, read at run time
(``Unknown Vendor Number`` / ``Unknown Device Type`` otherwise).

Version fields (hard match): name ``EtherNet-IP-2``, the rest kept; the port
is made ``open``. Output table: type, vendor, productName, serialNumber,
productCode, revision, status, state, deviceIp. An answer that passes the
checks but is too short for a field makes Nmap's Lua die: the script fails
with Nmap's error output, setting nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import CONNECT_TIMEOUT
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.proto.luastring import LuaError, byte, c_hex, unpack_int, unpack_s1
from vscand.scripts.proto.luatable import nse_table
from vscand.scripts.shortport import version_port_or_service

__all__ = ["LIST_IDENTITY", "EnipInfo", "parse_identity"]

LIST_IDENTITY = bytes.fromhex("63000000000000000000000000000000c1debed100000000")
#: ``stdnse.get_timeout(host)`` on a loopback target
TIMEOUT = CONNECT_TIMEOUT

_rule = version_port_or_service([44818], ["EtherNet-IP-2", "EtherNet/IP-2"], ("tcp", "udp"))


def parse_identity(
    response: bytes, vendors: Mapping[int, str], devices: Mapping[int, str]
) -> Table | None:
    """The output table of a List Identity answer, None when it is not one;
    raises LuaError where Nmap's script dies on a short answer."""
    if byte(response, 1) != 0x63 or len(response) < 27:
        return None
    if byte(response, 27) != 0x0C:
        return None
    dword, _ = unpack_int(response, 37, 4, big=True)
    address = ".".join(str(b) for b in dword.to_bytes(4, "big"))
    vendor, pos = unpack_int(response, 49, 2)
    device, pos = unpack_int(response, pos, 2)
    product_code, pos = unpack_int(response, pos, 2)
    major, pos = unpack_int(response, pos, 1)
    minor, pos = unpack_int(response, pos, 1)
    status, pos = unpack_int(response, pos, 2)
    serial, pos = unpack_int(response, pos, 4)
    name, pos = unpack_s1(response, pos)
    state, pos = unpack_int(response, pos, 1)
    output = Table()
    output["type"] = f"{devices.get(device, 'Unknown Device Type')} ({device})"
    output["vendor"] = f"{vendors.get(vendor, 'Unknown Vendor Number')} ({vendor})"
    output["productName"] = name.decode("latin-1")
    output["serialNumber"] = c_hex(serial, 8)
    output["productCode"] = lua_str(product_code)
    output["revision"] = f"{major}.{minor}"
    output["status"] = c_hex(status, 4)
    output["state"] = c_hex(state, 2)
    output["deviceIp"] = address
    return output


class EnipInfo(BaseScript):
    name = "enip-info"

    def __init__(
        self, vendors: Mapping[int, str] | None = None, devices: Mapping[int, str] | None = None
    ) -> None:
        self._vendors = vendors
        self._devices = devices

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return None
        try:
            conn.send(LIST_IDENTITY)
        except ExchangeError:
            conn.close()
            return None
        try:
            response = await conn.receive(TIMEOUT)
        except ExchangeError:
            return None  # NSE's status string: its first byte is never 0x63
        finally:
            conn.close()
        vendors, devices = self._vendors, self._devices
        if vendors is None:
            vendors = nse_table("enip-info.nse", "vendor_id")
        if devices is None:
            devices = nse_table("enip-info.nse", "device_type")
        try:
            output = parse_identity(response, vendors, devices)
        except LuaError as exc:
            raise ScriptFailed(str(exc)) from None
        if output is None:
            return None
        run.set_version(VersionUpdate(name="EtherNet-IP-2"))
        run.set_port_state("open")
        return ScriptOutput(table=output)
