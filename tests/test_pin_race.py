"""Two first opens at the same instant with different embedders (issue 20, item 7).

Both used to succeed and both stored vectors: on PostgreSQL every later semantic get
raised, on SQLite vectors of two dimensions were stored silently. The pin is now decided
once, in one write transaction: the loser gets EmbedderMismatchError. Real processes,
released at the same instant, on both engines.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

import semcache
from semcache import settings as identity_rules
from tests.engines import ENGINES

pytestmark = pytest.mark.engines(*ENGINES)

_OPENER = """
import json, sys, time
import semcache
location, embedder, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time() - 0.01))  # imports done before; then spin
while time.time() < start:  # released together
    pass
try:
    cache = semcache.open(location, embedder=embedder)
except semcache.EmbedderMismatchError as exc:
    print(json.dumps({"embedder": embedder, "error": str(exc)}))
    sys.exit(0)
cache.put("a question from " + embedder + " " + sys.argv[4], "an answer")
print(json.dumps({"embedder": embedder, "pinned": cache.embedder_name}))
cache.close()
"""

EMBEDDERS = ("hashing:v1:256", "hashing:v1:384")
PROCESSES_PER_EMBEDDER = 2
ROUNDS = 4


def _race(location: str) -> list[dict]:
    start = time.time() + 2.0  # time for every interpreter to start and import semcache
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, location, emb, str(start),
                               str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for i in range(PROCESSES_PER_EMBEDDER) for emb in EMBEDDERS]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout))
    return out


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_racing_first_opens_with_different_embedders_pin_one(make_location, round_: int) -> None:
    location = make_location(f"race-{round_}.db")
    results = _race(location)
    winners = {r["embedder"] for r in results if "pinned" in r}
    assert len(winners) == 1, results  # every open that succeeded uses one embedder
    [winner] = winners
    for r in results:
        if r["embedder"] == winner:
            assert r.get("pinned") == winner, r
        else:  # the loser is told which embedder the cache has and what it was given
            assert winner in r["error"] and r["embedder"] in r["error"], r
    with semcache.open(location) as cache:
        assert cache.embedder_name == winner
        dims = {len(e.vector) for e in cache.entries(with_vectors=True)}
        assert dims == {int(winner.rsplit(":", 1)[1])}
        assert len(cache.entries()) == PROCESSES_PER_EMBEDDER
        assert cache.get("a question from " + winner + " 0") is not None


def test_both_opens_read_an_unpinned_file_then_one_pins(location: str, monkeypatch) -> None:
    # The same race made certain: both opens have read the settings (nothing pinned yet)
    # and chosen their embedder before either writes its pin.
    chosen = identity_rules._chosen
    both_chose = threading.Barrier(2, timeout=30)

    def chosen_then_wait(*args: object, **kwargs: object) -> object:
        result = chosen(*args, **kwargs)  # type: ignore[arg-type]
        if args[2] is None:  # the file was not pinned when this open read it
            both_chose.wait()
        return result

    monkeypatch.setattr(identity_rules, "_chosen", chosen_then_wait)
    outcomes: dict[str, object] = {}

    def open_with(embedder: str) -> None:
        try:
            cache = semcache.open(location, embedder=embedder)
        except semcache.SemcacheError as exc:
            outcomes[embedder] = exc
            return
        cache.put(f"from {embedder}", "x")
        outcomes[embedder] = cache.embedder_name
        cache.close()

    threads = [threading.Thread(target=open_with, args=(e,)) for e in EMBEDDERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    errors = [o for o in outcomes.values() if isinstance(o, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], semcache.EmbedderMismatchError), outcomes
    [winner] = [o for o in outcomes.values() if isinstance(o, str)]
    with semcache.open(location) as cache:
        assert cache.embedder_name == winner
        assert {len(e.vector) for e in cache.entries(with_vectors=True)} == \
            {int(str(winner).rsplit(":", 1)[1])}
