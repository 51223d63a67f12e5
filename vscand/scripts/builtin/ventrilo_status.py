"""The plain text of a Ventrilo status answer: ventrilo-info's table and its own text.

:func:`parse_status` reads it as the script does, with Lua's ``string.find``
from the end of the previous match: ``NAME:``, ``PHONETIC:``, ``COMMENT:``,
``AUTH:``, ``MAXCLIENTS:``, ``VOICECODEC:``, ``VOICEFORMAT:``, ``UPTIME:``,
``PLATFORM:``, ``VERSION:``, ``CHANNELCOUNT:``, ``CHANNELFIELDS:`` (a comma
list), then every ``CHANNEL:`` line right after (each field ``FIELD=value``
found in turn), ``CLIENTCOUNT:``, ``CLIENTFIELDS:`` and the ``CLIENT:``
lines; a value not found is ``n/a``. Channels are keyed by CID, the lobby
(CID 0) first; a client joins its channel's ``clients`` list, or a ``-1``
channel for clients of an unknown CID.

Deliberate differences (hostile answers only): a field name is matched
literally (the script uses it as a Lua pattern), and a ``CHANNEL:`` or
``CLIENT:`` line where no field is found ends the list (the script loops
forever there).

Pure code.
"""

from __future__ import annotations

import math
import re

from vscand.output.script_output import ScriptFailed, Table, Value, lua_str
from vscand.scripts.builtin.game_query import lua_tonumber

__all__ = ["auth_str", "format_status", "parse_status", "uptime_str"]

_AUTH = {"0": "none", "1": "pw", "2": "user/pw"}
_HEADINGS = (("name", "NAME"), ("phonetic", "PHONETIC"), ("comment", "COMMENT"),
             ("auth", "AUTH"), ("maxclients", "MAXCLIENTS"), ("voicecodec", "VOICECODEC"),
             ("voiceformat", "VOICEFORMAT"), ("uptime", "UPTIME"), ("platform", "PLATFORM"),
             ("version", "VERSION"), ("channelcount", "CHANNELCOUNT"),
             ("channelfields", "CHANNELFIELDS"))  # fmt: skip


def auth_str(auth: str) -> str:
    return _AUTH.get(auth, auth)


def _lua_floor(value: float) -> int | float:
    if math.isfinite(value):
        floored = math.floor(value)
        if -(2**63) <= floored < 2**63:
            return floored
    return value


def uptime_str(uptime: str) -> str:
    """``Hh:Mm`` of a number of seconds (the string itself when it is no number)."""
    seconds = lua_tonumber(uptime)
    if seconds is None:
        return uptime
    hours = _lua_floor(seconds / 3600)
    minutes = _lua_floor((seconds - hours * 3600) / 60)
    return f"{lua_str(hours)}h:{lua_str(minutes)}m"


def _find(data: bytes, literal: bytes, tail: bytes, pos: int) -> tuple[int, str]:
    """``str_find``: Lua's ``string.find(data, literal .. tail, pos)`` → (end of the
    match or ``pos``, the capture or ``n/a``)."""
    match = re.compile(re.escape(literal) + tail).search(data, max(pos, 1) - 1)
    if match is None:
        return pos, "n/a"
    return match.end(), match.group(1).decode("latin-1")


def _list(value: str) -> Table:
    return Table(array=[v for v in re.findall(r"[^,\n]+", value)])


def parse_status(data: bytes) -> Table:
    """The script's output table (see the module docstring)."""
    info = Table()
    pos = 0
    for key, heading in _HEADINGS:
        pos, info[key] = _find(data, heading.encode() + b": ", rb"([^\n]*)", pos)
    channel_fields = [str(v) for v in _list(str(info["channelfields"])).array]
    info["channelfields"] = Table(array=list(channel_fields))
    # by CID; a dict keeps a reassigned key in place, as output_table (and looks up in O(1))
    channels: dict[str, Table] = {"0": Table.of({"NAME": "<top level lobby>", "CID": "0"})}
    info["channels"] = Table()
    while data[pos + 1 : pos + 10] == b"CHANNEL: ":
        start = pos
        channel = Table()
        for name in channel_fields:
            pos, channel[name] = _find(data, name.encode("latin-1") + b"=", rb"([^,\n]*)", pos)
        if "CID" in channel:
            channels[str(channel["CID"])] = channel
        if pos == start:
            break
    pos, info["clientcount"] = _find(data, b"CLIENTCOUNT: ", rb"([^\n]*)", pos)
    pos, clientfields = _find(data, b"CLIENTFIELDS: ", rb"([^\n]*)", pos)
    client_fields = [str(v) for v in _list(clientfields).array]
    info["clientfields"] = Table(array=list(client_fields))
    while data[pos + 1 : pos + 9] == b"CLIENT: ":
        start = pos
        client = Table()
        for name in client_fields:
            pos, client[name] = _find(data, name.encode("latin-1") + b"=", rb"([^,\n]*)", pos)
        if "CID" in client:
            _add_client(channels, str(client["CID"]), client)
        if pos == start:
            break
    info["channels"] = Table(fields=list(channels.items()))
    return info


def _add_client(channels: dict[str, Table], cid: str, client: Table) -> None:
    unknown = cid not in channels
    if unknown:
        if "-1" not in channels:
            channels["-1"] = Table.of(
                {"NAME": "<clients with unrecognized CIDs>", "CID": "-1", "clients": Table()}
            )
        cid = "-1"
    channel = channels[cid]
    clients = _get(channel, "clients")
    if clients is None and not unknown:
        channel["clients"] = clients = Table()
    if not isinstance(clients, Table):
        raise ScriptFailed("table.insert into a value that is not a table")
    clients.append(client)


def _get(table: Table, key: str) -> Value | None:
    for name, value in table.fields:
        if name == key:
            return value
    return None


def _joined(value: Value) -> str:
    return ", ".join(str(v) for v in value.array) if isinstance(value, Table) else ""


def _piece(value: Value | None) -> str:
    """``strbuf .. value``: only strings concatenate (a nil is a Lua error)."""
    if not isinstance(value, str):
        raise ScriptFailed("bad #2 operand to strbuf concat operation")
    return value


def format_status(info: Table) -> str:
    """The script's text (``o_str``)."""
    out = []
    for key, label in (("name", "name"), ("phonetic", "phonetic"), ("comment", "comment")):
        out += [f"\n{label}: ", _piece(_get(info, key))]
    out += ["\nauth: ", auth_str(_piece(_get(info, "auth")))]
    for key, label in (("maxclients", "max. clients"), ("voicecodec", "voice codec"),
                       ("voiceformat", "voice format")):  # fmt: skip
        out += [f"\n{label}: ", _piece(_get(info, key))]
    out += ["\nuptime: ", uptime_str(_piece(_get(info, "uptime")))]
    for key, label in (("platform", "platform"), ("version", "version"),
                       ("channelcount", "channel count")):  # fmt: skip
        out += [f"\n{label}: ", _piece(_get(info, key))]
    channel_fields = info["channelfields"]
    client_fields = info["clientfields"]
    assert isinstance(channel_fields, Table) and isinstance(client_fields, Table)
    out += ["\nchannel fields: ", _joined(channel_fields)]
    out += ["\nclient count: ", _piece(_get(info, "clientcount"))]
    out += ["\nclient fields: ", _joined(client_fields), "\nchannels:"]
    channels = info["channels"]
    assert isinstance(channels, Table)
    for _cid, channel in channels.fields:
        assert isinstance(channel, Table)
        out += ["\n", _piece(_get(channel, "NAME")), " ("]
        fields = [str(f) for f in channel_fields.array]
        for j, name in enumerate(fields, 1):
            if name not in ("NAME", "n/a"):
                value = _get(channel, name)
                out += [name, ": ", _piece(value if value is not None else "n/a")]
                if j != len(fields):
                    out.append(", ")
        out.append("): ")
        clients = _get(channel, "clients")
        if clients is None:
            out.append("<empty>")
            continue
        if not isinstance(clients, Table):
            continue  # ipairs over a string: nothing
        names = [str(f) for f in client_fields.array]
        for client in clients.array:
            assert isinstance(client, Table)
            out += ["\n  ", _piece(_get(client, "NAME")), " ("]
            for k, name in enumerate(names, 1):
                if name not in ("NAME", "CID"):
                    out += [name, ": ", _piece(_get(client, name))]
                    if k != len(names):
                        out.append(", ")
    return "".join(out)
