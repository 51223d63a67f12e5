"""``ubiquiti-discovery``: a Ubiquiti device's discovery service (v1 or v2).

Runs on port 10001 or service ``ubiquiti-discovery`` (udp, open or
open|filtered; no intensity or exclusion check: NSE's plain
``port_or_service``). Sends the v1 discovery request (``01 00 00 00``) and
reads until 4 bytes arrived (``receive_bytes(4)``: datagrams concatenated;
5 s socket timeout, per datagram here); without an answer, the same with the
v2 request (``02 08 00 00``). Any answer makes the port ``open``.

The answer is parsed as NSE does: byte 0 is 1 (then byte 1 must be 0, "v1")
or 2 (byte 1 6, 9 or 11, "v2"); the big-endian length at bytes 2-3 must be
the rest's length exactly; then TLVs (type byte, 2-byte length), a length
beyond the data rejecting the whole answer. Known types: 0x01 MAC, 0x02 MAC
and IP, 0x03 firmware (its ``.vN.N.N`` part is the version), 0x0a uptime,
0x0b hostname, 0x0c product, 0x0d ESSID, 0x0f management port, 0x14/0x15
model, 0x16 version, 0x17 config status (a 4-byte value read in the host's
byte order, as Lua's ``"I4"``: little-endian here).

Version fields (hard match): name ``ubiquiti-discovery``, product
``Ubiquiti Discovery Service``, extra info ``<v1|v2> protocol[, product or
model] software ver. <version>`` (only when a version was found; else kept),
ostype ``Linux``. Output: the parsed table (``stdnse.output_table`` order);
``interface_to_ip`` and ``mac_addresses`` come from Lua hash tables whose
order Nmap does not fix: we keep first-seen order (equal with one MAC and one
address per MAC). MACs are plain hex in 7.93 (its ``stdnse.tohex`` drops the
separator) and colon-separated from 7.94 on.
"""

from __future__ import annotations

import re
import struct

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.probes.grammar import release_key
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.shortport import port_or_service

__all__ = ["PROBE_V1", "PROBE_V2", "UbiquitiDiscovery", "format_mac", "parse_response", "str_to_ip"]

PROBE_V1 = b"\x01\x00\x00\x00"
PROBE_V2 = b"\x02\x08\x00\x00"
#: ``socket:set_timeout(5000)``
TIMEOUT = 5.0
#: ``receive_bytes(4)``
MIN_BYTES = 4

_rule = port_or_service([10001], ["ubiquiti-discovery"], ("udp",), ("open", "open|filtered"))
_HUMAN_VERSION = re.compile(r"\.(v[0-9]+\.[0-9]+\.[0-9]+)")


class UbiquitiError(Exception):
    """Where NSE's Lua dies (an address of neither 4 nor 16 bytes as a table key)."""


def format_mac(raw: bytes, release: str = "7.93") -> str:
    """``stdnse.format_mac``: hex, colon-separated from 7.94 on (7.93 drops the colons)."""
    if release_key(release) >= (7, 94):
        return ":".join(f"{b:02x}" for b in raw)
    return raw.hex()


def str_to_ip(raw: bytes) -> str | None:
    """``ipOps.str_to_ip``: 4 or 16 bytes as an address, with its IPv6 shortening."""
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    if len(raw) == 16:
        words = struct.unpack(">8H", raw)
        full = ":".join(f"{w:x}" for w in words)
        full = re.sub(r":[:0]+", "::", full, count=1)
        return re.sub(r"^0::", "::", full, count=1)
    return None


def _uptime(seconds: int) -> str:
    days, hours = seconds // 86400, seconds // 3600 % 24
    return f"{days} days {hours:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


def parse_response(response: bytes, release: str = "7.93") -> Table | None:
    """NSE's ``parse_discovery_response``: the output table, or None (not Ubiquiti).

    Raises :class:`UbiquitiError` where NSE's Lua dies."""
    if len(response) < 4:
        return None
    info = Table()
    if response[0] == 0x01:
        if response[1] != 0x00:
            return None
        info["protocol"] = "v1"
    elif response[0] == 0x02:
        if response[1] not in (0x06, 0x09, 0x0B):
            return None
        info["protocol"] = "v2"
    else:
        return None
    (config_len,) = struct.unpack_from(">H", response, 2)
    if len(response) != config_len + 4:
        return None
    data = response[4:]
    macs: dict[str, None] = {}
    addresses: dict[str, dict[str, None]] = {}
    pos = 0
    while pos <= len(data) - 3:
        kind = data[pos]
        (length,) = struct.unpack_from(">H", data, pos + 1)
        pos += 3
        if length > len(data) - pos:
            return None
        value = data[pos : pos + length]
        if kind in (0x01, 0x02):
            mac = format_mac(value[:6], release)
            macs[mac] = None
            if kind == 0x02:
                ip = str_to_ip(value[6:length])
                if ip is None:
                    raise UbiquitiError("an address of neither 4 nor 16 bytes (nil table key)")
                addresses.setdefault(mac, {})[ip] = None
        elif kind == 0x03:
            info["firmware"] = _text(value)
            found = _HUMAN_VERSION.search(_text(value))
            if found:
                info["version"] = found.group(1)
        elif kind == 0x0A:
            if length == 4:
                (uptime,) = struct.unpack(">I", value)
                info["uptime_seconds"] = lua_str(uptime)
                info["uptime"] = _uptime(uptime)
        elif kind in (0x0B, 0x0C, 0x0D, 0x14, 0x15, 0x16):
            key = {0x0B: "hostname", 0x0C: "product", 0x0D: "essid", 0x16: "version"}
            info[key.get(kind, "model")] = _text(value)
        elif kind == 0x0F:
            if length == 4:
                info["mgmt_port"] = lua_str(struct.unpack(">I", value)[0] & 0xFFFF)
        elif kind == 0x17:
            flag = None
            if length == 4:
                (flag,) = struct.unpack("<I", value)
            elif length == 1:
                flag = value[0]
            if flag == 1:
                info["config_status"] = "default/unmanaged"
            elif flag == 0:
                info["config_status"] = "managed/adopted"
        pos += length
    if addresses:
        info["interface_to_ip"] = Table(
            fields=[(mac, Table(list(ips))) for mac, ips in addresses.items()]
        )
    if macs:
        info["mac_addresses"] = Table(list(macs))
    return info


def _field(table: Table, key: str) -> str | None:
    if key not in table:
        return None
    value = table[key]
    return value if isinstance(value, str) else None


class UbiquitiDiscovery(BaseScript):
    name = "ubiquiti-discovery"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port)

    async def _probe(self, run: ScriptRun, probe: bytes) -> bytes | None:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return None
        try:
            conn.send(probe)
            data = b""
            while len(data) < MIN_BYTES:
                data += await conn.receive(TIMEOUT)
            return data
        except ExchangeError:
            return None
        finally:
            conn.close()

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        response = await self._probe(run, PROBE_V1)
        if response is None:
            response = await self._probe(run, PROBE_V2)
            if response is None:
                return None
        run.set_port_state("open")
        try:
            result = parse_response(response, run.release)
        except UbiquitiError as exc:
            raise ScriptFailed(str(exc)) from None
        if result is None:
            return None
        version = _field(result, "version")
        extrainfo: str | None = None
        if version is not None:  # Lua: any string is true, the empty one too
            extrainfo = f"{_field(result, 'protocol')} protocol"
            detail = _field(result, "product")
            detail = detail if detail is not None else _field(result, "model")
            if detail is not None:
                extrainfo += f", {detail}"
            extrainfo += f" software ver. {version}"
        update = VersionUpdate(
            name="ubiquiti-discovery",
            product="Ubiquiti Discovery Service",
            extrainfo=KEEP if extrainfo is None else extrainfo,
            ostype="Linux",
        )
        run.set_version(update)
        return ScriptOutput(table=result)
