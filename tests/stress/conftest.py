"""Stress tests: real processes on one file. Tests marked ``slow`` (the long loops) only run
with ``SEMCACHE_SLOW=1`` or ``-m slow``, so the default run stays short."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SEMCACHE_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="long stress loop: set SEMCACHE_SLOW=1 or use -m slow")
    here = str(Path(__file__).parent)
    for item in items:
        if "slow" in item.keywords and str(item.fspath).startswith(here):
            item.add_marker(skip)
