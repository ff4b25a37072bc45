"""Install hints name this project's distribution, ``semcache-sqlite[...]``: on PyPI,
``semcache`` is another project with the same import name, so ``pip install
'semcache[serve]'`` installs something unrelated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import semcache

ROOT = Path(semcache.__file__).parent.parent
#: ``semcache[`` not preceded by a word character or a dash (``semcache-sqlite[`` is fine).
_WRONG = re.compile(r"(?<![\w-])semcache\[")
#: A pip command line naming any distribution with extras.
_PIP_EXTRA = re.compile(r"pip install\s+['\"]?([\w.-]+)\[")


def _texts() -> list[Path]:
    files = [p for p in (ROOT / "semcache").rglob("*.py")]
    files += list((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "pyproject.toml"]
    return [p for p in files if p.exists()]


def test_no_install_hint_names_another_distribution() -> None:
    wrong = []
    for path in _texts():
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if _WRONG.search(line):
                wrong.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
            for name in _PIP_EXTRA.findall(line):
                if name not in ("semcache-sqlite", "."):
                    wrong.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert wrong == []


def test_serve_without_its_extra_names_the_distribution(tmp_path: Path) -> None:
    # uvicorn made unimportable in a real `semcache serve` process: the one-line error must
    # be a pip command that installs this project's extra.
    code = ("import sys; sys.modules['uvicorn'] = None\n"
            "from semcache.cli import main\n"
            "sys.exit(main(['serve', '--upstream', 'http://127.0.0.1:9/v1', '--cache', "
            "sys.argv[1], '--embedder', 'hashing']))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.db")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'semcache-sqlite[serve]'" in proc.stderr
    assert not _WRONG.search(proc.stderr)


def test_a_postgres_url_without_the_driver_names_the_distribution(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "import semcache\n"
            "try:\n"
            "    semcache.open('postgresql://u@127.0.0.1:1/db')\n"
            "except semcache.ConfigurationError as exc:\n"
            "    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert "pip install 'semcache-sqlite[postgres]'" in proc.stdout, proc.stderr
