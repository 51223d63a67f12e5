"""Helpers shared by the matcher benchmarks (not part of the package).

Run the benchmarks as scripts (``python benchmarks/match.py``); this module is
imported from the script's own directory.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vscand.cachedir import user_cache_dir

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def cache_dir() -> Path:
    return user_cache_dir()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": percentile(values, 0.95),
        "max": max(values),
        "min": min(values),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine() -> dict[str, Any]:
    from vscand.probes import pcre
    from vscand.probes import prefilter as prefilter_mod

    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "pcre": pcre.version(),
        "hyperscan": None,
        "hyperscan_library": None,
    }
    if prefilter_mod.available():
        import hyperscan

        info["hyperscan"] = getattr(hyperscan, "__version__", "?")
        try:
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=[b"x"], ids=[0], elements=1, flags=[0])
            info["hyperscan_library"] = str(
                db.info().decode() if isinstance(db.info(), bytes) else db.info()
            )
        except Exception as exc:  # informational only
            info["hyperscan_library"] = f"? ({exc})"
    return info


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def fmt(value: float, digits: int = 1) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"
