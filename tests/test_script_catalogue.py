"""Every version script of the installed Nmap exists here, and no other runs.

``nmap -sV`` runs the ``version`` category of its ``scripts/script.db`` (45 scripts in
7.93, 47 in 7.95). The built-in scripts for the installed release must be exactly
those names; for the other release known here, the names of ``registry.SINCE`` make
the difference. Skips only without an installed Nmap, and fails under CI then.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from vscand.probes.release import installed_release
from vscand.scripts.registry import SINCE, builtin_scripts, in_release

SCRIPT_DB = Path("/usr/share/nmap/scripts/script.db")
_ENTRY = re.compile(r'Entry \{ filename = "([^"]+)\.nse", categories = \{([^}]*)\} \}')


def version_category(text: str) -> set[str]:
    """The script names of ``script.db`` whose categories include ``version``."""
    return {name for name, cats in _ENTRY.findall(text) if '"version"' in cats}


def test_script_db_reading() -> None:
    text = (
        'Entry { filename = "a-version.nse", categories = { "version", } }\n'
        'Entry { filename = "b.nse", categories = { "default", "safe", } }\n'
    )
    assert version_category(text) == {"a-version"}


def test_the_installed_releases_version_category_is_ours() -> None:
    found = installed_release()
    if found is None or not SCRIPT_DB.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("no installed Nmap (script.db): make test installs it")
        pytest.skip("no installed Nmap")
    release = found[0]
    theirs = version_category(SCRIPT_DB.read_text())
    ours = {s.name for s in builtin_scripts(release=release)}
    assert ours == theirs, (release, sorted(theirs - ours), sorted(ours - theirs))


def test_later_scripts_run_only_from_their_release() -> None:
    everything = {s.name for s in builtin_scripts(release="7.95")}
    older = {s.name for s in builtin_scripts(release="7.93")}
    assert everything - older == set(SINCE) == {"tftp-version", "iec61850-mms"}
    assert len(older) == 45 and len(everything) == 47
    assert not in_release("tftp-version", None) and in_release("tftp-version", "7.991")
