"""``hnap-info``: a device's Home Network Administration Protocol answer (``GET /HNAP1``).

Runs (intensity >= 7) on likely-HTTP ports (``shortport.http``). Stops when the
server answers 200 to made-up URIs (``identify_404``). A 200 answer to
``GET /HNAP1`` is read as NSE's SLAXML reads it (SAX, whitespace stripped):
the text of ``Type``, ``DeviceName``, ``VendorName``, ``ModelDescription``,
``ModelName``, ``FirmwareVersion``, ``PresentationURL``, ``string`` and
``SubDeviceURLs`` elements goes into an ``stdnse.output_table`` (:func:`hnap_table`).

The NSE script then asks ``next(output)``, which is always nil for an
output table (its values live behind a proxy): in Nmap 7.93 and 7.95 the
script never sets a version and never prints anything (checked end to end).
We do the same: the requests are sent and the body parsed, and the only
possible outcome is NSE's runtime error where SLAXML dies (a numeric entity
``tonumber`` cannot read, in an attribute or in text it decodes), printed as
``ERROR: Script execution failed``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from vscand.output.script_output import ScriptFailed, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun
from vscand.scripts.nsehttp import get
from vscand.scripts.nsehttp404 import all_uris_200
from vscand.scripts.shortport import likely_http

__all__ = ["ELEMENTS", "HnapInfo", "hnap_table", "sax_events"]

ELEMENTS = {
    "Type": "Type",
    "DeviceName": "Device",
    "VendorName": "Vendor",
    "ModelDescription": "Description",
    "ModelName": "Model",
    "FirmwareVersion": "Firmware",
    "PresentationURL": "Presentation URL",
    "string": "SOAPACTIONS",
    "SubDeviceURLs": "Sub Device URLs",
}
_LISTS = frozenset({"SOAPACTIONS", "Sub Device URLs", "Type"})

_NAME = rb"[A-Za-z_][A-Za-z0-9_.-]*"
_PI = re.compile(rb"<\?[:A-Za-z_][:A-Za-z0-9_.-]* ?.*?\?>", re.DOTALL)
_COMMENT = re.compile(rb"<!--(.*?)-->", re.DOTALL)
_CDATA = re.compile(rb"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_CLOSE = re.compile(rb"</(" + _NAME + rb")\s*>|</" + _NAME + rb":(" + _NAME + rb")\s*>")
_START = re.compile(rb"<(" + _NAME + rb")(?::(" + _NAME + rb"))?")
_ATTRIBUTE = re.compile(rb"\s+[:A-Za-z_][:A-Za-z0-9_.-]*\s*=\s*(\"[^<\"]*\"|'[^<']*')")
_END_OF_TAG = re.compile(rb"\s*(/?)>")
_TEXT = re.compile(rb"[^<]+")
_ENTITY = re.compile(rb"&(#?)([0-9A-Za-z]+);")
_ENTITIES = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"', b"apos": "'"}
_SPACE = b" \t\n\v\f\r"


def _unescape(raw: bytes) -> str:
    def swap(match: re.Match[bytes]) -> str:
        named = _ENTITIES.get(match.group(2))
        if named is not None:
            return named
        if match.group(1) != b"#":
            return match.group(0).decode("latin-1")
        digits = b"0" + match.group(2)
        try:
            number = int(digits, 16) if digits[:2].lower() == b"0x" else int(digits, 10)
        except ValueError as exc:
            raise ScriptFailed("bad numeric entity") from exc
        if number > 0x10FFFF:
            return match.group(0).decode("latin-1")  # utf8_enc's nil: the entity stays
        return _utf8(number).decode("latin-1")

    out: list[str] = []
    pos = 0
    for match in _ENTITY.finditer(raw):
        out.append(raw[pos : match.start()].decode("latin-1"))
        out.append(swap(match))
        pos = match.end()
    out.append(raw[pos:].decode("latin-1"))
    return "".join(out)


def _utf8(number: int) -> bytes:
    """``unicode.utf8_enc``: the UTF-8 bytes of a code point (surrogates included)."""
    if number < 0x80:
        return bytes([number])
    count, lead = (1, 0xC0) if number < 0x800 else (2, 0xE0) if number < 0x10000 else (3, 0xF0)
    tail = [0x80 | ((number >> (6 * i)) & 0x3F) for i in range(count)][::-1]
    return bytes([lead | number >> (6 * count), *tail])


Event = tuple[str, str]


def sax_events(xml: bytes) -> Iterator[Event]:
    """SLAXML's ``parseSAX`` with ``stripWhitespace``: ("start", local name),
    ("close", local name), ("text", raw text), ("cdata", text) in document
    order. Raises :class:`ScriptFailed` where SLAXML dies on an attribute."""
    pos, text_start, size = 0, 0, len(xml)
    in_tag = False
    pending: str | None = None

    def finish_text(first: int) -> Iterator[Event]:
        if first > text_start:
            text = xml[text_start:first].strip(_SPACE)
            if text:
                yield ("text", text.decode("latin-1"))

    while pos < size - 1:
        if not in_tag:
            if (found := _PI.match(xml, pos)) or (found := _COMMENT.match(xml, pos)):
                yield from finish_text(pos)
                pos = text_start = found.end()
            elif found := _CDATA.match(xml, pos):
                yield from finish_text(pos)
                yield ("cdata", found.group(1).decode("latin-1"))
                pos = text_start = found.end()
            elif found := _CLOSE.match(xml, pos):
                yield from finish_text(pos)
                yield ("close", (found.group(1) or found.group(2)).decode("latin-1"))
                pos = text_start = found.end()
            elif found := _START.match(xml, pos):
                yield from finish_text(pos)
                pending = (found.group(2) or found.group(1)).decode("latin-1")
                pos, in_tag = found.end(), True
            else:
                found = _TEXT.match(xml, pos)
                pos = found.end() if found else pos + 1
        elif found := _ATTRIBUTE.match(xml, pos):
            _unescape(found.group(1)[1:-1])  # SLAXML decodes every attribute value
            pos = found.end()
        elif found := _END_OF_TAG.match(xml, pos):
            pos = text_start = found.end()
            in_tag = False
            assert pending is not None
            yield ("start", pending)
            if found.group(1):
                yield ("close", pending)
        else:
            return


def hnap_table(body: bytes) -> Table:
    """The script's output table from an ``/HNAP1`` body (empty: nothing found)."""
    table = Table()
    callback: Callable[[str], None] | None = None

    def collector(label: str) -> Callable[[str], None]:
        def store(content: str) -> None:
            if label in _LISTS:
                if label not in table:
                    table[label] = Table()
                current = table[label]
                assert isinstance(current, Table)
                current.append(content)
            else:
                table[label] = content

        return store

    # NSE's text callback: nil before any element and after the start of an element
    # it does not collect; a do-nothing function after any close
    noop: Callable[[str], None] = lambda _text: None  # noqa: E731
    for kind, value in sax_events(body):
        if kind == "start":
            label = ELEMENTS.get(value)
            callback = collector(label) if label is not None else None
        elif kind == "close":
            callback = noop
        elif callback is not None:
            callback(_unescape(value.encode("latin-1")) if kind == "text" else value)
    return table


class HnapInfo(BaseScript):
    name = "hnap-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return likely_http(port) and ctx.intensity >= 7

    async def action(self, run: ScriptRun) -> None:
        port = run.port
        if await all_uris_200(run.exchange, port):
            return None
        response = await get(run.exchange, port, "/HNAP1")
        if response.status != 200:
            return None
        hnap_table(response.body or b"")  # NSE's parse: it can only die (ScriptFailed)
        # ``next()`` of an stdnse.output_table is always nil: NSE returns here
        return None
