"""``snmp-info``: the SNMPv3 engine ID (enterprise) from an SNMPv3 GetRequest's report.

Runs on port 161 or service ``snmp`` (udp, intensity >= 7, not excluded). The
answer to the probe file's ``SNMPv3GetRequest`` is taken from the port's
fingerprint when the engine kept it, else the same datagram is sent. The
answer must decode (with Nmap's ASN.1 decoder and its quirks: an unknown tag
yields nothing and its contents are not skipped) to version 3, msgID 0x4a69
and the User-based Security Model; the engine ID's first four bytes give the
enterprise number (minus 0x80000000 when above it), named from Nmap's
``enterprise_numbers.txt``.

Version fields: product ``<enterprise> SNMPv3 server``, or ``<product>;
<enterprise> SNMPv3 server`` when the port already had another product;
everything else kept (Nmap's script writes the name into a field
``set_port_version`` does not read); hard match.

Output (NSE's output table): ``enterprise`` (the name; the number when a
number without the high bit has no name; absent when one with it has none),
``engineIDFormat`` and ``engineIDData`` (ipv4/ipv6/mac/text/octets/unknown as
the engine ID's format byte says; mac is plain hex in 7.93, ``:``-separated
from 7.95 on, ``stdnse.tohex``'s fix), ``snmpEngineBoots`` and
``snmpEngineTime`` (``datetime.format_time``). Where Nmap's Lua dies (an
engine ID of 4 bytes with the high bit, a time that is not a number, a
decoder error) the script raises :class:`ScriptFailed` before setting
anything.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import exchange
from vscand.scripts.fingerprints import fingerprint_response
from vscand.scripts.nsefmt import format_time, lua_value, str_to_ip, tohex
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import DataFile

__all__ = ["SNMPV3_GET_REQUEST", "AsnError", "EngineInfo", "SnmpInfo", "ber_decode", "engine_info",
           "load_enterprise_numbers", "parse_enterprise_numbers"]  # fmt: skip

SNMPV3_GET_REQUEST = (
    b"\x30\x3a\x02\x01\x03\x30\x0f\x02\x02\x4a\x69\x02\x03\x00\xff\xe3\x04\x01\x04\x02\x01\x03"
    b"\x04\x10\x30\x0e\x04\x00\x02\x01\x00\x02\x01\x00\x04\x00\x04\x00\x04\x00\x30\x12\x04\x00"
    b"\x04\x00\xa0\x0c\x02\x02\x37\xf0\x02\x01\x00\x02\x01\x00\x30\x00"
)
ENTERPRISE_FILES = DataFile(
    "/usr/share/nmap/nselib/data/enterprise_numbers.txt",
    "/usr/local/share/nmap/nselib/data/enterprise_numbers.txt",
)

_rule = version_port_or_service([161], ["snmp"], ("udp",))


class AsnError(Exception):
    """Where Nmap's decoder raises a Lua error (data too short, bad integer size)."""


_INTEGER = {0x02, 0x41, 0x42, 0x43, 0x46, 0x47}
_STRING = {0x04, 0x44}
_OID = {0x06, 0x45}
_SEQUENCE = {0x30, 0xA0, 0xA1, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8}
#: "no value" (Lua nil: not inserted into a sequence)
_NONE = object()


def _length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise AsnError("data string too short")
    length = data[pos]
    pos += 1
    if length > 128:
        count, length = length - 128, 0
        for _ in range(count):
            if pos >= len(data):
                raise AsnError("data string too short")
            length = length * 256 + data[pos]
            pos += 1
    return length, pos


def _take(data: bytes, pos: int, length: int) -> bytes:
    if pos + length > len(data):
        raise AsnError("data string too short")
    return data[pos : pos + length]


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise AsnError("data string too short")
    tag = data[pos]
    length, pos = _length(data, pos + 1)
    if tag == 0x01:
        return _take(data, pos, 1)[0] != 0, pos + 1
    if tag in _INTEGER:
        if length > 16:
            return _NONE, pos
        if length == 0:
            raise AsnError("integral size out of limits")
        return int.from_bytes(_take(data, pos, length), "big", signed=True), pos + length
    if tag in _STRING:
        return _take(data, pos, length), pos + length
    if tag == 0x05:
        return False, pos
    if tag in _OID:
        return tuple(_take(data, pos, length)), pos + length
    if tag in _SEQUENCE:
        body = _take(data, pos, length)
        items: list[Any] = []
        at = 0
        while at < length - 1:  # Lua: while sPos < len, sPos 1-based
            value, at = _decode(body, at)
            if value is not _NONE and value is not None:
                items.append(value)
        return items, pos + length
    return _NONE, pos  # no decoder: the contents are not skipped


def ber_decode(data: bytes) -> Any:
    """Nmap's ``snmp.decode``: the first element (None when its tag is unknown)."""
    value, _pos = _decode(data, 0)
    return None if value is _NONE else value


class EngineInfo:
    def __init__(self, enterprise: int, engine_id: bytes, boots: Any, time: Any) -> None:
        self.enterprise_number = enterprise
        self.engine_id = engine_id
        self.boots = boots
        self.time = time


def engine_info(response: bytes) -> tuple[int, bool, EngineInfo] | None:
    """``(enterprise number, high bit set, info)`` from an SNMPv3 report, or None."""
    decoded = ber_decode(response)
    if (
        not isinstance(decoded, list)
        or not decoded
        or decoded[0] != 3
        or isinstance(decoded[0], bool)
    ):
        return None
    if len(decoded) < 2 or not isinstance(decoded[1], list):
        return None
    header = decoded[1]
    if not header or header[0] != 0x4A69 or isinstance(header[0], bool):
        return None
    if len(header) < 4 or header[3] != 3 or isinstance(header[3], bool):
        return None
    if len(decoded) < 3 or not isinstance(decoded[2], bytes):
        raise AsnError("security parameters are not a string")
    params = ber_decode(decoded[2])
    if not isinstance(params, list) or not params or not isinstance(params[0], bytes):
        raise AsnError("engine id is not a string")
    engine_id = params[0]
    if len(engine_id) < 4:
        raise AsnError("engine id shorter than 4 bytes")
    (number,) = struct.unpack(">I", engine_id[:4])
    info = EngineInfo(number, engine_id, params[1] if len(params) > 1 else None,
                      params[2] if len(params) > 2 else None)  # fmt: skip
    if number > 0x80000000:
        return number - 0x80000000, True, info
    return number, False, info


def parse_enterprise_numbers(text: str) -> dict[int, str]:
    """``number<TAB>name`` lines (others ignored), as Nmap's ``datafiles.parse_file``."""
    table: dict[int, str] = {}
    for line in text.splitlines():
        digits = ""
        for char in line:
            if not char.isdigit() or not char.isascii():
                break
            digits += char
        tab = line.find("\t")
        if digits and tab >= 0:
            table[int(digits)] = line[tab + 1 :]
    return table


@functools.cache
def load_enterprise_numbers() -> dict[int, str] | None:
    try:
        return parse_enterprise_numbers(ENTERPRISE_FILES.read_text())
    except OSError:
        return None


def enterprise_value(number: int, high_bit: bool, names: dict[int, str] | None) -> str | None:
    """``output.enterprise``: the name; the number (no high bit); None (nil)."""
    if names is None:
        return "unknown"  # Nmap's fallback table when the file cannot be read
    name = names.get(number)
    if name is not None:
        return name
    return None if high_bit else lua_str(number)


def engine_output(info: EngineInfo, high_bit: bool, release: str) -> list[tuple[str, str | None]]:
    """``engineIDFormat``/``engineIDData`` as NSE's script fills them."""
    engine_id = info.engine_id
    if not high_bit:
        return [("engineIDFormat", "unknown"), ("engineIDData", tohex(engine_id[4:]))]
    if len(engine_id) < 5:
        raise ScriptFailed("engine id has no format byte")  # string.unpack fails
    kind, data = engine_id[4], engine_id[5:]
    if kind == 1:
        return [("engineIDFormat", "ipv4"), ("engineIDData", str_to_ip(data[:4]))]
    if kind == 2:
        return [("engineIDFormat", "ipv6"), ("engineIDData", str_to_ip(data[:16]))]
    if kind == 3:
        return [
            ("engineIDFormat", "mac"),
            ("engineIDData", tohex(data[:6], release, separator=True)),
        ]
    if kind == 4:
        return [("engineIDFormat", "text"), ("engineIDData", data.decode("latin-1"))]
    return [("engineIDFormat", "octets" if kind == 5 else "unknown"), ("engineIDData", tohex(data))]


class SnmpInfo(BaseScript):
    name = "snmp-info"

    def __init__(self, enterprise_numbers: dict[int, str] | bool | None = True) -> None:
        #: True: Nmap's file, read once; None: no file (names are "unknown")
        self._names = enterprise_numbers

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        response = fingerprint_response(run.port.fingerprint, "SNMPv3GetRequest")
        if response is None:
            response = await exchange(run.exchange, SNMPV3_GET_REQUEST)
            if response is None:
                return None
        try:
            found = engine_info(response)
        except AsnError as exc:
            raise ScriptFailed(str(exc)) from exc
        if found is None:
            return None
        number, high_bit, info = found
        names = load_enterprise_numbers() if self._names is True else self._names
        enterprise = enterprise_value(number, high_bit, names if isinstance(names, dict) else None)
        out = Table()
        out["enterprise"] = enterprise
        for key, value in engine_output(info, high_bit, run.release):
            out[key] = value
        out["snmpEngineBoots"] = lua_value(info.boots)
        if not isinstance(info.time, int) or isinstance(info.time, bool):
            raise ScriptFailed("snmpEngineTime is not a number")  # format_time compares it
        out["snmpEngineTime"] = format_time(info.time)
        shown = "nil" if enterprise is None else enterprise  # Lua's %s of nil
        product = run.port.product
        if product and product != "SNMPv3 server":
            text = f"{product}; {shown} SNMPv3 server"
        else:
            text = f"{shown} SNMPv3 server"
        run.set_version(VersionUpdate(product=text))
        return ScriptOutput(table=out)
