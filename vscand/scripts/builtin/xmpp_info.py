"""``xmpp-info``: an XMPP server's stream header and features, and a guess of its vendor.

Runs on ports 5222/5269 or services jabber/xmpp-client/xmpp-server (tcp,
open, intensity >= 7, not excluded). As Nmap 7.93, three streams are opened
(namespace ``jabber:client`` when the port is named ``xmpp-client``, else
``jabber:server``): to the server name ``.``, to the target's name (the name
given by the user, else NSE's ``host.name``: the reverse-DNS name, empty as
with ``-n``: we resolve none), and to that name again after STARTTLS.
Each reads tags until ``</stream:features>`` (a "tag" is what ends at the
first ``>`` or the first 256 bytes, parsed with Nmap's trivial regular
expressions).

Version fields (hard matches, in Nmap's order):

* a ``<c node='http://www.process-one.net/en/ejabberd/'>`` capability inside
  the features makes the product ``ejabberd`` (each stream that shows it);
* after the two plain streams, the stream ids of the ``.`` stream and the
  named one are matched against Nmap's id table (prosody, Citadel, jabberd,
  jabberd2, Isode M-Link, ejabberd, Openfire, Tigase, VKontakte/XMPP): the
  first entry that matches sets the product.

The tag parser, the per-stream reading and the id table are pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.builtin.xmpp_factor import factor
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import BufferedReader, start_tls

__all__ = [
    "ScriptDied",
    "StreamScan",
    "Tag",
    "XmppInfo",
    "identify_server",
    "make_request",
    "parse_tag",
    "tag_end",
]

_rule = version_port_or_service([5222, 5269], ["jabber", "xmpp-client", "xmpp-server"], ("tcp",))
#: ``client:set_timeout(10 * 1000)``
TIMEOUT = 10.0
TAG_LIMIT = 256
EJABBERD_NODE = "http://www.process-one.net/en/ejabberd/"
KNOWN_FEATURES = frozenset(
    {"starttls", "compression", "mechanisms", "register", "dialback", "session", "auth",
     "bind", "c", "sm", "amp", "ver"}
)  # fmt: skip

# Lua's %w (isalnum, C locale) and %s (isspace)
_W = "A-Za-z0-9"
_S = " \\t\\n\\x0b\\x0c\\r"
_TAG = re.compile(f"([^<]*)<(/?)([?:{_W}-]+)")
_ATTR_SINGLE = re.compile(f"[{_S}]([{_W}:]+)='([^']+)'")
_ATTR_DOUBLE = re.compile(f'[{_S}]([{_W}:]+)="([^"]+)"')


class ScriptDied(Exception):
    """Where Nmap's script raises a Lua error: it ends, keeping what it already set."""


@dataclass(frozen=True)
class Tag:
    name: str
    attrs: dict[str, str]
    start: bool
    contents: str
    finish: bool


def parse_tag(text: str) -> Tag | None:
    """Nmap's ``xmpp.XML.parse_tag`` (a first ``<name``, quoted attributes)."""
    found = _TAG.search(text)
    if found is None:
        return None
    contents, slash, name = found.groups()
    attrs: dict[str, str] = {}
    for pattern in (_ATTR_SINGLE, _ATTR_DOUBLE):
        for key, value in pattern.findall(text):
            attrs[key] = value
    finish = slash != "" or text[-2:] == "/>"
    return Tag(name, attrs, slash == "", contents, finish)


def tag_end(buffer: bytes) -> int | None:
    """``match.pattern_limit(">", 256)``: up to the first ``>``, or 256 bytes."""
    at = buffer.find(b">")
    if at >= 0:
        return at + 1
    return TAG_LIMIT if len(buffer) >= TAG_LIMIT else None


def make_request(server_name: str, xmlns: str) -> bytes:
    return (
        "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'"
        f" xmlns={xmlns} xml:lang='ru-RU' to='{server_name}' version='1.0'>"
    ).encode("latin-1", "replace")


_SIMPLE_FEATURES = {
    "ver": "Roster Versioning",
    "dialback": "Server Dialback",
    "session": "IM Session Establishment",
    "bind": "Resource Binding",
    "amp": "Advanced Message Processing",
    "register": "In-Band Registration",
}


@dataclass
class StreamScan:
    """What one stream showed, fed tag by tag (the loop of Nmap's ``scan``)."""

    stream_id: str | None = None
    ejabberd: bool = False
    features: list[str] = field(default_factory=list)
    mechanisms: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    #: error entries: tag names and "(timeout)" (strings), texts (``{text=}`` tables)
    errors: list[str | Table] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    info: Table = field(default_factory=Table)
    capabilities: Table = field(default_factory=Table)
    server_name: str = ""
    starttls: bool = False
    tls_required: bool = False
    _stack: list[str] = field(default_factory=lambda: [""])
    _in_error: bool = False
    _got_text: bool = False

    def _inside(self, *names: str) -> bool:
        path = ("stream:features", *names)
        if len(path) > len(self._stack):
            return False
        return tuple(self._stack[-len(path) :]) == path

    def feed(self, tag: Tag) -> bool:
        """Take one tag; True when the features ended (stop reading)."""
        if tag.name == "stream:features" and tag.finish:
            return True
        inside = self._inside()
        if inside and tag.name not in KNOWN_FEATURES:
            self.unknown.append(tag.name)
        if tag.name == "stream:stream" and tag.start:
            if tag.attrs.get("xmlns:ack") == "http://www.xmpp.org/extensions/xep-0198.html#ns":
                self.info.append("Stream Management")
            if "xml:lang" in tag.attrs:
                self.info["lang"] = tag.attrs["xml:lang"]
            if "from" in tag.attrs and tag.attrs["from"] != self.server_name:
                self.info["server name"] = tag.attrs["from"]
            self.stream_id = tag.attrs.get("id")
            self.info["version"] = tag.attrs.get("version", "(none)")
        if tag.name == "sm" and tag.start and inside:
            # Nmap's pattern is "^urn:xmpp:sm:(%.)": a literal dot, so "urn:xmpp:sm:3"
            # gives nil and the script dies concatenating it
            found = re.match(r"urn:xmpp:sm:(\.)", tag.attrs.get("xmlns", ""))
            if found is None:
                raise ScriptDied("stream management namespace without a dot")
            self.features.append("Stream management v" + found.group(1))
        if tag.name == "starttls" and inside:
            self.starttls = True
        elif tag.name == "address" and tag.finish and inside:
            self.features.append("MY IP: " + tag.contents)
        elif tag.name in _SIMPLE_FEATURES and inside:
            self.features.append(_SIMPLE_FEATURES[tag.name])
        elif tag.name == "auth" and inside:
            self.mechanisms.append("Non-SASL")
        elif tag.name == "required" and self._inside("starttls"):
            self.tls_required = True
        elif tag.name == "method" and self._inside("compression", "method"):
            if tag.finish:
                self.methods.append(tag.contents)
        elif tag.name == "mechanism" and self._inside("mechanisms", "mechanism"):
            if tag.finish:
                self.mechanisms.append(tag.contents)
        elif tag.name == "c" and inside and "node" in tag.attrs:
            self.capabilities["node"] = tag.attrs["node"]
            if tag.attrs["node"] == EJABBERD_NODE:
                self.ejabberd = True
            self.capabilities["ver"] = tag.attrs.get("ver")
        if tag.name == "stream:error":
            if tag.start:
                self._in_error = True
            elif not self._got_text:
                if tag.contents:
                    self.errors.append(Table.of({"text": tag.contents}))
                self._in_error = False
        elif self._in_error:
            if tag.name == "text":
                if tag.finish:
                    self._got_text = True
                    self.errors.append(Table.of({"text": tag.contents}))
            else:
                self.errors.append(tag.name)
        if tag.start and not tag.finish:
            self._stack.append(tag.name)
        elif not tag.start and tag.finish and len(self._stack) > 1:
            self._stack.pop()
        return False

    def timed_out(self) -> None:
        self.errors.append("(timeout)")

    def finish(self) -> None:
        """After the loop: STARTTLS goes last into the features."""
        if self.starttls:
            self.features.append("TLS (required)" if self.tls_required else "TLS")

    def lists(self) -> dict[str, list[Any]]:
        return {
            "features": list(self.features),
            "compression_methods": list(self.methods),
            "auth_mechanisms": list(self.mechanisms),
            "errors": list(self.errors),
            "unknown": list(self.unknown),
        }

    def result(self) -> Table:
        """The table NSE's ``scan`` returns (a plain Lua table: its key order is
        Lua's hash order in Nmap; here the source order)."""
        out = Table()
        out["stream_id"] = self.stream_id
        out["xmpp"] = self.info
        out["features"] = Table(list(self.features))
        out["capabilities"] = self.capabilities
        out["compression_methods"] = Table(list(self.methods))
        out["auth_mechanisms"] = Table(list(self.mechanisms))
        out["errors"] = Table(list(self.errors))
        out["unknown"] = Table(list(self.unknown))
        return out


_HEX = "[0-9a-f]"
_UUID = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"


def _citadel(id1: str, id2: str) -> bool:
    first, second = int(id1, 16), int(id2, 16)
    return second - first < 20 and second > first


#: Nmap's id table, in its order: (pattern for the "." stream's id, pattern for
#: the named stream's id (None: that stream has no id), product, extra check)
ID_TABLE: tuple[tuple[str | None, str | None, str, Callable[[str, str], bool] | None], ...] = (
    (f"^{_UUID}$", "^$", "prosody", None),
    (f"^{_HEX}{{8}}$", f"^{_HEX}{{8}}$", "Citadel", _citadel),
    ("^[0-9]{9}$", None, "jabberd", None),
    ("^[0-9]{10}$", None, "jabberd", None),
    ("^[0-9a-z]{40}$", "^[0-9a-z]{40}$", "jabberd2", None),
    (f"^{_HEX}{{16}}$", f"^{_HEX}{{16}}$", "Isode M-Link", None),
    ("^[0-9]{8}[0-9]?[0-9]?$", "^[0-9]{8}[0-9]?[0-9]?$", "ejabberd", None),
    (f"^{_HEX}{{6}}{_HEX}?{_HEX}?$", f"^{_HEX}{{6}}{_HEX}?{_HEX}?$", "Openfire", None),
    (f"^{_UUID}$", "^tigase[-]error[-]tigase$", "Tigase", None),
    ("^tigase[-]error[-]tigase$", "^tigase[-]error[-]tigase$", "Tigase", None),
    (f"^{_HEX}{{16}}$", f"^{_HEX}{{16}}$", "Isode M-Link", None),
    ("^c2s_", "^c2s_", "VKontakte/XMPP", None),
)


def _matches(value: str | None, pattern: str | None) -> bool:
    if value is None:
        return pattern is None
    # Lua's $ is the end of the subject: no newline allowance
    return pattern is not None and re.search(pattern.replace("$", r"\Z"), value) is not None


def identify_server(id1: str | None, id2: str | None) -> str | None:
    """Nmap's ``server_info``: the product the two stream ids point to."""
    for first, second, product, check in ID_TABLE:
        matched = _matches(id1, first) and _matches(id2, second)
        if matched and (check is None or check(id1 or "", id2 or "")):
            return product
    return None


class XmppInfo(BaseScript):
    name = "xmpp-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        port = run.port
        xmlns = "'jabber:client'" if port.name == "xmpp-client" else "'jabber:server'"
        # NSE: host.targetname or host.name (the reverse-DNS name, "" without one);
        # we resolve no names: "" unless the user gave a name
        server_name = port.target_name or ""
        try:
            alt = await self._scan(run, ".", xmlns, tls=False)
            plain = await self._scan(run, server_name, xmlns, tls=False)
            if alt is None or plain is None:
                raise ScriptFailed("indexing a missing stream result")  # as Nmap's Lua
            product = identify_server(alt.stream_id, plain.stream_id)
            if product is not None:
                run.set_version(VersionUpdate(product=product))
            secure = await self._scan(run, server_name, xmlns, tls=True)
        except ScriptDied as exc:
            raise ScriptFailed(str(exc)) from exc
        out = Table()
        if not alt.errors and not plain.errors:
            out.append("Ignores server name")
        elif len(alt.errors) != len(plain.errors):
            out.append("Respects server name")
        if secure is None:
            out.append("STARTTLS Failed")
            out["info"] = plain.result()
        else:
            both, first_only, second_only = factor(plain, secure)
            out["info"], out["pre_tls"], out["post_tls"] = both, first_only, second_only
        return ScriptOutput(table=out)

    async def _scan(
        self, run: ScriptRun, server_name: str, xmlns: str, *, tls: bool
    ) -> StreamScan | None:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return None
        try:
            reader = BufferedReader(conn, timeout=TIMEOUT)
            if tls and not await self._starttls(conn, reader, server_name, xmlns):
                return None
            conn.send(make_request(server_name, xmlns))
            scan = StreamScan(server_name=server_name)
            while True:
                try:
                    raw = await reader.read_until(tag_end)
                except ExchangeError:
                    scan.timed_out()
                    break
                tag = parse_tag(raw.decode("latin-1"))
                if tag is None:
                    scan.timed_out()
                    break
                seen = scan.ejabberd
                try:
                    ended = scan.feed(tag)
                finally:
                    if scan.ejabberd and not seen:
                        run.set_version(VersionUpdate(product="ejabberd"))
                if ended:
                    break
            scan.finish()
            return scan
        except ExchangeError:
            return None
        finally:
            conn.close()

    async def _starttls(
        self, conn: Connection, reader: BufferedReader, server_name: str, xmlns: str
    ) -> bool:
        conn.send(
            make_request(server_name, xmlns)
            + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
        )
        while True:
            try:
                raw = await reader.read_until(tag_end)
            except ExchangeError:
                return False
            tag = parse_tag(raw.decode("latin-1"))
            if tag is None:
                return False
            if tag.name == "proceed" and tag.finish:
                if reader.buffer:
                    return False
                return await start_tls(conn, TIMEOUT)
            if tag.name == "failure":
                return False
