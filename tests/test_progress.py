"""Progress bars of the long commands (issue 24 item 5), run in-process as a user's
terminal would see them: stderr a real pseudo-terminal (a pty, with a window size), stdout
a pipe. The bars are drawn on stderr only, never on stdout (``export -`` writes its data
there), and only on a terminal: off a terminal, and with ``--quiet``, nothing is drawn.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import sys
import termios
import threading
from pathlib import Path

import pytest

import semcache
from semcache.cli import main
from tests.cli_helpers import make_cache


class Terminal:
    """A pty whose slave end is ``sys.stderr`` while a command runs; everything written
    to it is read concurrently (a full pty buffer would block the writer)."""

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        self.stream = io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), encoding="utf-8",
                                       write_through=True)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the slave end was closed: EIO
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    def text(self) -> str:
        self.stream.close()
        self.reader.join(10)
        os.close(self.master)
        return b"".join(self.chunks).decode("utf-8", "replace")


def run(monkeypatch: pytest.MonkeyPatch, argv: list[str], *, tty: bool) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``semcache ARGV`` run in this process."""
    out = io.StringIO()
    err: Terminal | io.StringIO = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err.stream if isinstance(err, Terminal) else err)
    try:
        code = main(argv)
    finally:
        monkeypatch.undo()
    return code, out.getvalue(), err.text() if isinstance(err, Terminal) else err.getvalue()


@pytest.fixture
def cache_file(tmp_path: Path) -> str:
    path = str(tmp_path / "c.db")
    make_cache(path)
    with semcache.open(path) as cache:
        cache.put_many([(f"filler question {i}", i) for i in range(300)])
    return path


def test_export_to_stdout_draws_on_the_terminal_never_in_the_data(
        monkeypatch: pytest.MonkeyPatch, cache_file: str) -> None:
    code, out, err = run(monkeypatch, ["export", cache_file, "-"], tty=True)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) >= 305 and all(json.loads(line) for line in lines)  # only data
    assert "exporting" in err and "100%" in err and "305/305" in err
    assert "exported 305 entries" in err


def test_quiet_and_off_a_terminal_nothing_is_drawn(monkeypatch: pytest.MonkeyPatch,
                                                   cache_file: str, tmp_path: Path) -> None:
    code, out, err = run(monkeypatch, ["export", cache_file, "-", "--quiet"], tty=True)
    assert code == 0 and "exporting" not in err and "%|" not in err
    dump = tmp_path / "d.jsonl"
    dump.write_text(out)
    for argv in (["export", cache_file, str(tmp_path / "e.jsonl")],
                 ["import", str(tmp_path / "i.db"), str(dump)],
                 ["vacuum", cache_file],
                 ["reembed", cache_file, str(tmp_path / "r.db"), "--embedder", "hashing"]):
        code, out, err = run(monkeypatch, argv, tty=False)
        assert code == 0, err
        assert "%|" not in err and "%|" not in out, argv
        code, out, err = run(monkeypatch, [*argv[:2], *argv[2:], "--quiet"]
                             if argv[0] != "import" else argv[:1] + [str(tmp_path / "j.db"),
                                                                     str(dump), "--quiet"],
                             tty=True)
        assert code == 0, err
        assert "%|" not in err, argv


def test_long_commands_draw_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                cache_file: str, tmp_path: Path) -> None:
    dump = str(tmp_path / "d.jsonl")
    code, _, err = run(monkeypatch, ["export", cache_file, dump], tty=True)
    assert code == 0 and "exporting: 100%" in err
    code, out, err = run(monkeypatch, ["import", str(tmp_path / "i.db"), dump], tty=True)
    assert code == 0 and "importing: 100%" in err and "305 entries" in err
    assert "imported 305 entries" in out and "%|" not in out
    code, out, err = run(monkeypatch, ["reembed", cache_file, str(tmp_path / "r.db"),
                                       "--embedder", "hashing"], tty=True)
    assert code == 0 and "re-embedding: 100%" in err and "305/305" in err
    assert "re-embedded 304 entries" in out and "1 expired" in out and "%|" not in out
    code, out, err = run(monkeypatch, ["vacuum", cache_file], tty=True)
    assert code == 0 and "4/4" in err and "vacuumed" in out
    for step in ("purging expired entries", "repairing the code index", "compacting the file",
                 "rebuilding the code mirror"):
        assert step in err
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"q {i}", "stored": f"q {i}?",
                                         "same": bool(i % 2)}) + "\n" for i in range(300)))
    code, out, err = run(monkeypatch, ["calibrate", cache_file, "--pairs", str(pairs)],
                         tty=True)
    assert code == 0 and "embedding pairs: 100%" in err and "%|" not in out
