"""The one cache directory of a user's vscand: ``make``, the demo, the tests, the
benchmarks and ``vscan`` all put the compiled prefilter there.

``$VSCAND_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/vscand``, else ``~/.cache/vscand``
(the XDG base directory specification). The daemon looks at systemd's
``CacheDirectory=`` and ``/var/cache/vscand`` first (:func:`vscand.config.default_cache_dir`),
then here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def user_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    configured = env.get("VSCAND_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "vscand"
