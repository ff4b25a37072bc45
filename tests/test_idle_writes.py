"""An idle cache writes nothing (issue 20, item 17).

The bad-input test compares the database's bytes before and after a refused call; it was
flaky under load because the 1 s flush timer wrote the lazy sqlite-vec catch-up
(``entry_codes`` rows) on its own, with no call made. Decision: once ``flush()`` returned,
a cache that gets no further call writes nothing; the catch-up rides on flushes of batched
hits (writes that happen anyway), on ``close()`` and on large writes (docs/reliability.md).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import semcache
from semcache.cache._writer import FLUSH_INTERVAL
from tests.conftest import sql_rows
from tests.engines import ENGINES, stored_state

DIM = 8


def _vec(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.5
    return v


@pytest.mark.engines(*ENGINES)
def test_an_idle_cache_writes_nothing_after_flush(location: str, engine: str) -> None:
    with semcache.open(location, dim=DIM, ttl=None) as cache:
        cache.put("existing", "value", vector=_vec(0))
        assert cache.get(_vec(0)) is not None  # a hit: batched, and the flush timer runs
        cache.flush()
        before = stored_state(location)
        time.sleep(FLUSH_INTERVAL * 2.5)  # past two ticks of the flush timer
        assert stored_state(location) == before
        if engine == "sqlite":  # flush() caught the sqlite-vec table up: nothing is left
            assert sql_rows(location, "SELECT count(*) FROM entry_codes") == [(1,)]


def test_the_catch_up_rides_on_flushes_and_close(db_path: str) -> None:
    with semcache.open(db_path, dim=DIM, ttl=None) as cache:
        for i in range(5):
            cache.put(f"p{i}", i, vector=_vec(i))
        time.sleep(FLUSH_INTERVAL * 1.5)  # no call, nothing pending: no timer write
        assert sql_rows(db_path, "SELECT count(*) FROM entry_codes") == [(0,)]
        assert cache.get(_vec(1)) is not None  # semantic search sees them meanwhile
        cache.flush()
        assert sql_rows(db_path, "SELECT count(*) FROM entry_codes") == [(5,)]
        cache.put("p5", 5, vector=_vec(5))
    assert sql_rows(db_path, "SELECT count(*) FROM entry_codes") == [(6,)]  # close()
