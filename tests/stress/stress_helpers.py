"""Running scripts/stress.py from the stress tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STRESS = ROOT / "scripts" / "stress.py"


def run_stress(*args: str, timeout: float = 600) -> dict[str, Any]:
    """Run scripts/stress.py in a fresh process and return its JSON report."""
    proc = subprocess.run([sys.executable, str(STRESS), *args, "--out", "-"],
                          capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"stress.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}") \
            from None
