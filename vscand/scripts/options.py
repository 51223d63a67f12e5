"""Command-line options of the script phase (``vscan scan``)."""

from __future__ import annotations

import argparse

from vscand.scripts.registry import ScriptSettings, builtin_scripts

__all__ = ["add_script_options", "script_settings"]


def add_script_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("version scripts (Nmap's NSE version category)")
    group.add_argument(
        "--no-scripts", action="store_true", help="no version scripts (the probe engine alone)"
    )
    group.add_argument(
        "--scripts", metavar="NAMES", help="only these version scripts (comma-separated)"
    )
    group.add_argument("--rpc-file", metavar="FILE", help="nmap-rpc file (default: Nmap's)")


def script_settings(args: argparse.Namespace) -> ScriptSettings | None:
    """The settings the options ask for; None when scripts are off.

    Raises ValueError naming an unknown script.
    """
    if getattr(args, "no_scripts", False):
        return None
    settings = ScriptSettings(rpc_file=getattr(args, "rpc_file", None))
    wanted = getattr(args, "scripts", None)
    if wanted:
        names = {n.strip() for n in wanted.split(",") if n.strip()}
        known = {s.name for s in builtin_scripts(settings)}
        unknown = sorted(names - known)
        if unknown:
            raise ValueError(f"unknown version script(s): {', '.join(unknown)}")
        settings = ScriptSettings(rpc_file=settings.rpc_file, disabled=frozenset(known - names))
    return settings
