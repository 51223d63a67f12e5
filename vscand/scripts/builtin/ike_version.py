"""``ike-version``: IKEv1 vendor IDs, looked up in Nmap's ``ike-fingerprints.lua``.

Runs on port 500 or service ``isakmp`` (udp, intensity >= 7, not excluded).
Up to four ISAKMP requests, each proposing the same 120 transforms (auth psk,
rsa, Hybrid, XAUTH x des, 3des, aes/128/192/256 x md5, sha1 x groups 768,
1024, 1536), as Nmap's ``ike`` library builds them: Aggressive mode with a
DH group 2 key and ID ``vpngroup``, then with a group 1 key, then group 2 and
an empty ID, then Main mode; each waits one second for one datagram. The first
answer longer than 19 bytes whose exchange type is not Informational ends the
search. Its payloads are walked from the header's next-payload (SA, Transform,
KE, ID, Hash, Nonce, VID are known; the walk stops at any other), and every
vendor ID (lower-case hex) is matched against the fingerprint file's Lua
patterns: the first ``vendor`` row matched gives the vendor, matched
``attribute`` rows add OS/device/CPE hints, and a ``vid_ordering`` row over the
concatenated IDs gives the vendor when none did (or the OS type when its
vendor agrees).

Version fields: the port becomes ``open``; with a vendor row, product =
vendor, version = its version, ostype and devicetype = the row's (cleared when
the row has none), its CPE appended; attribute rows fill ostype/devicetype when
still empty and append their CPEs; hard match when any of that applied.
Output (NSE's output table): ``vendor_id`` (the row's vendor, then `` `` and
its version when it has one) and ``attributes`` (the matched attribute rows'
texts), possibly empty. A response without vendor IDs makes the port open and
then dies as Nmap's script does (:class:`ScriptFailed`); so does a payload cut
short (Lua error in the parser, before anything is set), and a missing
fingerprint file when there are vendor IDs. Nmap binds source port 500 when
it may; we use an ephemeral source port.

The fingerprint file is Lua; :func:`parse_fingerprints` reads its
``table.insert(fingerprints, {...})`` records (strings and nil only).
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import DataFile

__all__ = ["Fingerprint", "IkeError", "IkeInfo", "IkeVersion", "build_request", "lookup",
           "lua_pattern", "parse_fingerprints", "parse_response", "transforms"]  # fmt: skip

FINGERPRINT_FILES = DataFile(
    "/usr/share/nmap/nselib/data/ike-fingerprints.lua",
    "/usr/local/share/nmap/nselib/data/ike-fingerprints.lua",
)
#: ``socket:set_timeout(1000)``
TIMEOUT = 1.0

_rule = version_port_or_service([500], ["isakmp"], ("udp",))

ENCRYPTION = {"des": (0x80010001, None), "3des": (0x80010005, None),
              "aes/128": (0x80010007, 0x800E0080), "aes/192": (0x80010007, 0x800E00C0),
              "aes/256": (0x80010007, 0x800E0100)}  # fmt: skip
AUTH = {"psk": 0x80030001, "rsa": 0x80030003, "Hybrid": 0x8003FADD, "XAUTH": 0x8003FDE9}
HASH = {"md5": 0x80020001, "sha1": 0x80020002}
GROUP = {"768": 0x80040001, "1024": 0x80040002, "1536": 0x80040005}
MODES = {"Main": 0x02, "Aggressive": 0x04}
EXCHANGE_TYPES = {0x02: "Main", 0x04: "Aggressive", 0x05: "Informational"}
PAYLOADS = {0x00: "None", 0x01: "SA", 0x03: "Transform", 0x04: "Key Exchange", 0x05: "ID",
            0x08: "Hash", 0x0A: "Nonce", 0x0D: "VID"}  # fmt: skip
KEY_LENGTHS = {1: 96, 2: 128, 5: 192}
#: the four attempts: (mode, DH group, identity)
ATTEMPTS: tuple[tuple[str, int, bytes], ...] = (
    ("Aggressive", 2, b"vpngroup"),
    ("Aggressive", 1, b"vpngroup"),
    ("Aggressive", 2, b""),
    ("Main", 0, b""),
)


class IkeError(Exception):
    """Where Nmap's code raises a Lua error (a payload cut short)."""


def transforms() -> list[tuple[str, str, str, str]]:
    """The 120 proposals, in Nmap's order: (auth, encryption, hash, group)."""
    return [(a, e, h, g) for a in AUTH for e in ENCRYPTION for h in HASH for g in GROUP]


def _transform(spec: tuple[str, str, str, str], number: int, total: int) -> bytes:
    auth, encryption, hash_name, group = spec
    enc, key_length = ENCRYPTION[encryption]
    length = 0x28 if key_length is not None else 0x24
    out = struct.pack(">BxHBBxxIIII", 0x00 if number == total else 0x03, length, number, 0x01,
                      enc, HASH[hash_name], AUTH[auth], GROUP[group])  # fmt: skip
    if key_length is not None:
        out += struct.pack(">I", key_length)
    return out + struct.pack(">IQ", 0x800B0001, 0x000C000400007080)


def build_request(
    mode: str, diffie: int, identity: bytes, port: int, random_bytes: Callable[[int], bytes]
) -> bytes:
    """One ISAKMP request as Nmap's ``ike.request`` builds it (UDP)."""
    specs = transforms()
    body = b"".join(_transform(s, i, len(specs)) for i, s in enumerate(specs, 1))
    aggressive = b""
    if mode == "Aggressive":
        key_length = KEY_LENGTHS[diffie]
        aggressive = (
            struct.pack(">BxH", 0x0A, key_length + 4) + random_bytes(key_length)
            + struct.pack(">BxH", 0x05, 24) + random_bytes(20)
            + struct.pack(">BxHBBH", 0x00, len(identity) + 8, 0x03, 0x11, port) + identity
        )  # fmt: skip
    header = random_bytes(8) + b"\x00" * 8 + struct.pack(
        ">BBBBII" "BxHII" "BxHBBBB",
        0x01, 0x10, MODES[mode], 0x00, 0, 48 + len(body) + len(aggressive),
        0x04 if mode == "Aggressive" else 0x00, 20 + len(body), 1, 1,
        0x00, 8 + len(body), 1, 1, 0, len(specs),
    )  # fmt: skip
    return header + body + aggressive


@dataclass(frozen=True)
class Fingerprint:
    category: str
    pattern: str
    vendor: str | None = None
    version: str | None = None
    ostype: str | None = None
    devicetype: str | None = None
    cpe: str | None = None
    text: str | None = None


_RECORD = re.compile(r"table\.insert\(\s*fingerprints\s*,\s*\{(.*?)\}\s*\)", re.DOTALL)
_FIELD = re.compile(r"""^\s*(\w+)\s*=\s*(?:'([^']*)'|"([^"]*)"|(nil))""", re.MULTILINE)


def parse_fingerprints(text: str) -> list[Fingerprint]:
    """The records of ``ike-fingerprints.lua`` (comments between fields ignored)."""
    out = []
    for record in _RECORD.finditer(text):
        fields: dict[str, str | None] = {}
        for match in _FIELD.finditer(record.group(1)):
            key, single, double, _nil = match.groups()
            fields[key] = single if single is not None else double
        if fields.get("category") and fields.get("fingerprint") is not None:
            out.append(
                Fingerprint(
                    str(fields["category"]),
                    str(fields["fingerprint"]),
                    fields.get("vendor"),
                    fields.get("version"),
                    fields.get("ostype"),
                    fields.get("devicetype"),
                    fields.get("cpe"),
                    fields.get("text"),
                )
            )
    return out


_LUA_CLASSES = {
    "a": "A-Za-z", "d": "0-9", "l": "a-z", "s": " \\t\\n\\x0b\\x0c\\r", "u": "A-Z",
    "w": "A-Za-z0-9", "x": "0-9A-Fa-f", "p": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}  # fmt: skip


@functools.lru_cache(maxsize=1024)
def lua_pattern(pattern: str) -> re.Pattern[str]:
    """A Lua pattern of the kind the fingerprint file uses (anchors, ``.``,
    ``%`` classes and escapes, ``[...]`` sets, ``* + - ?``) as a Python regex."""
    out, i = [], 0
    if pattern.startswith("^"):
        out.append("^")
        i = 1
    while i < len(pattern):
        char = pattern[i]
        if char == "%" and i + 1 < len(pattern):
            code = pattern[i + 1]
            cls = _LUA_CLASSES.get(code.lower())
            if cls is not None:
                out.append(f"[^{cls}]" if code.isupper() else f"[{cls}]")
            else:
                out.append(re.escape(code))
            i += 2
            continue
        if char == "$" and i == len(pattern) - 1:
            out.append(r"\Z")
        elif char == ".":
            out.append("(?s:.)")
        elif char == "-":
            out.append("*?")
        elif char in "*+?":
            out.append(char)
        elif char == "[":
            end = pattern.index("]", i + 2)
            out.append("[" + pattern[i + 1 : end].replace("%", "\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


@functools.cache
def load_fingerprints() -> tuple[Fingerprint, ...]:
    try:
        return tuple(parse_fingerprints(FINGERPRINT_FILES.read_text()))
    except OSError:
        return ()


@dataclass
class IkeInfo:
    vendor: Fingerprint | None = None
    attributes: list[Fingerprint] = field(default_factory=list)


def lookup(vendor_ids: Sequence[str], fingerprints: Sequence[Fingerprint]) -> IkeInfo:
    """Nmap's ``ike.lookup``."""
    info = IkeInfo()
    for vendor_id in vendor_ids:
        for row in fingerprints:
            if not lua_pattern(row.pattern).search(vendor_id):
                continue
            if row.category == "vendor":
                if info.vendor is None:
                    info.vendor = row
            elif row.category == "attribute":
                info.attributes.append(row)
                break
    joined = "".join(vendor_ids)
    for row in fingerprints:
        if row.category != "vid_ordering" or not lua_pattern(row.pattern).search(joined):
            continue
        if info.vendor is None:
            info.vendor = row
            return info
        if info.vendor.vendor == row.vendor:
            info.vendor = replace(info.vendor, ostype=row.ostype)
            return info
    return info


@dataclass(frozen=True)
class IkeResponse:
    success: bool
    vendor_ids: tuple[str, ...] | None = None


def parse_response(packet: bytes) -> IkeResponse:
    """Nmap's ``ike.response``: not Informational → success, with the VID payloads."""
    if len(packet) <= 19:
        return IkeResponse(False)
    if EXCHANGE_TYPES.get(packet[18]) == "Informational":
        return IkeResponse(False)
    if len(packet) < 29:
        return IkeResponse(True, None)
    kind = PAYLOADS.get(packet[16])
    index = 28
    found: list[str] = []
    while kind is not None and kind != "None" and index < len(packet):
        if index + 4 > len(packet):
            raise IkeError("payload header cut short")
        next_payload, length = packet[index], struct.unpack_from(">H", packet, index + 2)[0]
        index += 4
        if length < 4 or index + length - 4 > len(packet):
            raise IkeError("payload cut short")
        body = packet[index : index + length - 4]
        index += length - 4
        if kind == "VID":
            found.append(body.hex())
        kind = PAYLOADS.get(next_payload)
    return IkeResponse(True, tuple(found) if found else None)


class IkeVersion(BaseScript):
    name = "ike-version"

    def __init__(
        self,
        fingerprints: Sequence[Fingerprint] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._fingerprints = fingerprints
        self._random = random_bytes

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def _send(self, run: ScriptRun, packet: bytes) -> IkeResponse:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return IkeResponse(False)
        try:
            conn.send(packet)
            data = await conn.receive(TIMEOUT)
        except ExchangeError:
            return IkeResponse(False)
        finally:
            conn.close()
        try:
            return parse_response(data)
        except IkeError as exc:
            raise ScriptFailed(str(exc)) from exc

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        response = None
        for mode, diffie, identity in ATTEMPTS:
            packet = build_request(mode, diffie, identity, run.port.number, self._random)
            answer = await self._send(run, packet)
            if answer.success:
                response = answer
                break
        if response is None:
            return None
        run.set_port_state("open")
        if response.vendor_ids is None:
            # Nmap's lookup returns {} and the script iterates its nil attribs
            raise ScriptFailed("no vendor ID payload")
        rows = self._fingerprints if self._fingerprints is not None else load_fingerprints()
        if not rows:
            raise ScriptFailed("no fingerprint file")  # Nmap: concatenating a nil path
        info = lookup(response.vendor_ids, rows)
        port = run.port
        cpe = list(port.cpe)
        changed = False
        product: str | object | None = KEEP
        version: str | object | None = KEEP
        ostype, devicetype = port.ostype, port.devicetype
        out = Table()
        if info.vendor is not None:
            changed = True
            row = info.vendor
            vendor_id: str | None = None
            if row.vendor is not None:
                product = vendor_id = row.vendor
            if row.version is not None:
                version = row.version
                vendor_id = (vendor_id or "") + " " + row.version
            out["vendor_id"] = vendor_id
            ostype, devicetype = row.ostype, row.devicetype
            if row.cpe is not None:
                cpe.append(row.cpe)
        texts: list[str | None] = []
        for row in info.attributes:
            texts.append(row.text)
            if row.ostype is not None or row.devicetype is not None or row.cpe is not None:
                changed = True
                ostype = ostype if ostype is not None else row.ostype
                devicetype = devicetype if devicetype is not None else row.devicetype
                if row.cpe is not None:
                    cpe.append(row.cpe)
        if any(text is not None for text in texts):
            shown: list[str] = []
            for text in texts:
                if text is None:
                    break  # ipairs stops at the first hole
                shown.append(text)
            out["attributes"] = Table(list(shown))
        if changed:
            run.set_version(
                VersionUpdate(
                    product=product,  # type: ignore[arg-type]
                    version=version,  # type: ignore[arg-type]
                    ostype=ostype,
                    devicetype=devicetype,
                    cpe=tuple(cpe),
                )
            )
        return ScriptOutput(table=out)
