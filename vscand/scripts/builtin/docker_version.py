"""``docker-version``: the Docker Engine API's ``GET /version``.

Runs on ports 2375/2376 or services docker/docker-s (tcp, intensity >= 7, not
excluded). A 200 response whose JSON body has ``Version`` and ``GitCommit``
makes the port ``docker``, product ``Docker``, version ``Version``: a hard
match (NSE's default state). Output: the parsed document as NSE returns it
(objects as keyed tables, arrays as lists, JSON null as an empty table,
numbers and booleans as Lua prints them). NSE's object keys come out in Lua's
hash order (different on every run of Nmap); ours keep the document's order.
"""

from __future__ import annotations

import json

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import http_get
from vscand.scripts.shortport import version_port_or_service

_rule = version_port_or_service([2375, 2376], ["docker", "docker-s"], ("tcp",))


def _version(value: object) -> str | None:
    """``lua_tostring`` in ``set_port_version``: strings and numbers; else nil."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return None
    return lua_str(value)


def _number(text: str) -> int | float:
    """Lua's ``tonumber`` on a JSON number: an integer unless it has a dot or exponent."""
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON for Nmap's parser")


def _lua_bytes(text: str) -> str:
    """A JSON string as Lua holds it: UTF-8 bytes (raw bytes kept), one char per byte."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def to_table(value: object) -> str | Table:
    """A parsed JSON value as NSE's output holds it."""
    if isinstance(value, dict):
        return Table.of({_lua_bytes(str(k)): to_table(v) for k, v in value.items()})
    if isinstance(value, list):
        return Table([to_table(v) for v in value])
    if value is None:
        return Table()  # json.NULL is an empty table
    if isinstance(value, str):
        return _lua_bytes(value)
    return lua_str(value)


class DockerVersion(BaseScript):
    name = "docker-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        response = await http_get(run.exchange, run.port, "/version")
        if response is None:
            return None
        status, _headers, body = response
        if status != 200 or not body:
            return None
        try:
            text = body.decode("utf-8", "surrogateescape")
            document = json.loads(
                text,
                parse_int=_number,
                parse_float=_number,
                parse_constant=_no_constant,
                strict=False,
            )
            table = to_table(document)
        except (ValueError, RecursionError):  # also a lone surrogate escape, NaN, Infinity
            return None
        if isinstance(document, (bool, int, float)):
            raise ScriptFailed("indexing a number or boolean")  # response["Version"] in Lua
        if not isinstance(document, dict):
            return None
        # Lua: response["Version"] and response["GitCommit"] (null is a table: true)
        if document.get("Version", False) is False or document.get("GitCommit", False) is False:
            return None
        version = _version(document["Version"])
        if isinstance(version, str):
            version = _lua_bytes(version)
        run.set_version(VersionUpdate(name="docker", product="Docker", version=version))
        assert isinstance(table, Table)
        return ScriptOutput(table=table)
