"""``python -m semcache``: the same command line as the ``semcache`` script."""

from __future__ import annotations

import sys

from semcache.cli import main

if __name__ == "__main__":
    sys.exit(main())
