"""``python -m vscand.cli``: the ``vscan`` command."""

import sys

from vscand.cli import main

sys.exit(main())
