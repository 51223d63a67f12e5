"""The built-in target policy, read from the package's ``data/targets.conf``: what the
daemon's configuration and ``vscan scan`` start from when nothing is configured.

Imports nothing of vscand: the configuration (and so the twistd plugin's options) reads
these defaults without loading the scanner.
"""

from __future__ import annotations

import configparser
from importlib import resources


def _defaults() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``allow`` and ``deny`` of the package's ``data/targets.conf``."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))
    parser.read_string((resources.files("vscand") / "data" / "targets.conf").read_text("utf-8"))
    section = parser["defaults"]
    return (
        tuple(section.get("allow", "").replace(",", " ").split()),
        tuple(section.get("deny", "").replace(",", " ").split()),
    )


#: the built-in policy (``vscand/data/targets.conf``): loopback only, no exclusions
DEFAULT_ALLOW, DEFAULT_DENY = _defaults()
