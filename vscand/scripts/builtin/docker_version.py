"""``docker-version``: the Docker Engine API's ``GET /version``.

Runs on ports 2375/2376 or services docker/docker-s (tcp, intensity >= 7, not
excluded). A 200 response whose JSON body has ``Version`` and ``GitCommit``
makes the port ``docker``, product ``Docker``, version ``Version``: a hard
match (NSE's default state).
"""

from __future__ import annotations

import json

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import http_get
from vscand.scripts.shortport import version_port_or_service

_rule = version_port_or_service([2375, 2376], ["docker", "docker-s"], ("tcp",))


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class DockerVersion(BaseScript):
    name = "docker-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        response = await http_get(run.exchange, run.port, "/version")
        if response is None:
            return None
        status, _headers, body = response
        if status != 200 or not body:
            return None
        try:
            document = json.loads(body)
        except ValueError:
            return None
        if not isinstance(document, dict) or "Version" not in document:
            return None
        if "GitCommit" not in document or document["Version"] is None:
            return None
        version = _text(document["Version"])
        run.set_version(VersionUpdate(name="docker", product="Docker", version=version))
        return "\n".join(f"{key}: {_text(value)}" for key, value in sorted(document.items()))
