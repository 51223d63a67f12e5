"""``cccam-version``: CCcam (card sharing) greets every connection with 16 random bytes.

Rule: ports 10000, 10001, 12000, 12001, 16000, 16001 or service ``cccam``
(tcp, open or open|filtered, intensity >= 7, not excluded). Two trials, each
a new connection reading what the peer sends first (NSE's default socket
timeout, 30 s); both answers must be 16 bytes, differ from each other and
pass ``formulas.looksRandom`` (:func:`looks_random`, its three chi-square
tests). Then name ``cccam``, version ``CCcam DVR card sharing system``; hard
match. No output.
"""

from __future__ import annotations

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.shortport import version_port_or_service

__all__ = ["CccamVersion", "looks_random"]

TRIALS = 2
#: NSE's default socket timeout
TIMEOUT = 30.0
#: formulas.lua's chi-square critical values (95 %) for 3, 15 and 255 degrees of freedom
_CHI2_CDF = {3: 7.8147279032511738, 15: 24.99579013972863, 255: 293.2478350807001}

_rule = version_port_or_service([10000, 10001, 12000, 12001, 16000, 16001], ["cccam"])


def _chi2(samples: list[str] | list[int], categories: int) -> float:
    """formulas.lua's chi2: only the categories that occur are summed."""
    bins: dict[object, int] = {}
    for sample in samples:
        bins[sample] = bins.get(sample, 0) + 1
    if not samples:
        return float("nan")
    expected = len(samples) / categories
    total = sum((n - expected) * (n - expected) for n in bins.values())
    return total / expected


def _split_bits(data: bytes, width: int) -> list[str]:
    """formulas.lua's splitbits: groups of ``width`` bits, the last group left out."""
    bits = "".join(f"{b:08b}" for b in data)
    return [bits[i : i + width] for i in range(0, len(bits) - width, width)]


def looks_random(data: bytes) -> bool:
    """``formulas.looksRandom``: 2-bit, 4-bit and byte chi-square tests."""
    if _chi2(_split_bits(data, 2), 4) > _CHI2_CDF[3]:
        return False
    if _chi2(_split_bits(data, 4), 16) > _CHI2_CDF[15]:
        return False
    return not _chi2(list(data), 256) > _CHI2_CDF[255]


class CccamVersion(BaseScript):
    name = "cccam-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def _trial(self, run: ScriptRun) -> bytes | None:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return None
        try:
            return await conn.receive(TIMEOUT)
        except ExchangeError:
            return None
        finally:
            conn.close()

    async def action(self, run: ScriptRun) -> None:
        seen: set[bytes] = set()
        for _ in range(TRIALS):
            data = await self._trial(run)
            if data is None or data in seen or len(data) != 16 or not looks_random(data):
                return
            seen.add(data)
        run.set_version(VersionUpdate(name="cccam", version="CCcam DVR card sharing system"))
