"""Tests of semcache.kernels: encoder, Hamming scan, code mirror."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from semcache.errors import DimensionError, InvalidInputError, InvalidVectorError
from semcache.kernels.hamming import NUMPY, Workspace, hamming_naive
from semcache.kernels.projection import BinaryEncoder, validate_matrix, validate_vector
from semcache.kernels.scan import topk
from semcache.store.sqlite.mirror import (
    EXPIRES_NEVER,
    HEADER_SIZE,
    ROW_BYTES,
    CodeMirror,
    MirrorInvalid,
)

CHUNK = 256  # small chunks so boundary cases stay cheap


# --------------------------------------------------------------------------- encoder


def test_encoder_deterministic_across_instances() -> None:
    x = np.random.default_rng(1).standard_normal((50, 24))
    a = BinaryEncoder(24, seed=7).encode(x)
    b = BinaryEncoder(24, seed=7).encode(x)
    c = BinaryEncoder(24, seed=8).encode(x)
    assert a.shape == (50, 32) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_encoder_bits_are_signs_of_projection() -> None:
    enc = BinaryEncoder(16, seed=3)
    w = np.random.default_rng(3).standard_normal((16, 256)).astype(np.float32)
    assert np.array_equal(enc.projection, w)
    x = np.random.default_rng(2).standard_normal((20, 16))
    bits = np.unpackbits(enc.encode(x), axis=-1, bitorder="little").astype(bool)
    proj = validate_matrix(x, 16).astype(np.float64) @ w.astype(np.float64)
    # float32 products: a sign may differ from the exact one only within rounding of 0
    assert np.all((bits == (proj > 0)) | (np.abs(proj) < 1e-5))
    # single vector == row of the batch; scaling does not change the code
    assert np.array_equal(enc.encode(x[4]), enc.encode(x)[4])
    assert np.array_equal(enc.encode(x[4] * 1e-30), enc.encode(x[4]))


def test_shipped_default_projection_is_the_generated_one() -> None:
    """The 384 x 256 (seed 0) matrix read from the package equals what default_rng makes:
    a file written with either must encode every vector to the same bits."""
    from semcache.kernels import projection

    shipped = projection._shipped(384, 256, 0)
    assert shipped is not None, "projection_384x256_seed0.f32 is missing from the package"
    generated = np.random.default_rng(0).standard_normal((384, 256)).astype(np.float32)
    assert shipped.dtype == np.float32 and np.array_equal(shipped, generated)
    assert projection._shipped(384, 256, 1) is None and projection._shipped(16, 256, 0) is None
    assert np.array_equal(BinaryEncoder(384).projection, generated)


def test_open_does_not_import_numpy_random(tmp_path: Path) -> None:
    """Opening a default-shape file and searching it skips numpy.random (5-8 ms), the stdlib
    sqlite3 module that the sqlite_vec package imports (~2.5 ms) and secrets (~3 ms)."""
    import subprocess
    import sys

    db = str(tmp_path / "v.db")
    code = (
        "import sys, numpy as np, semcache\n"
        f"c = semcache.open({db!r}, dim=384)\n"
        "v = np.ones(384, dtype=np.float32)\n"
        "c.put(v, 'x'); assert c.get(v).response == 'x'; c.close()\n"
        "print(sorted({'numpy.random', 'sqlite3', 'secrets'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_to_words_little_endian() -> None:
    enc = BinaryEncoder(8)
    codes = enc.encode(np.random.default_rng(0).standard_normal((3, 8)))
    words = enc.to_words(codes)
    assert words.shape == (3, 4)
    bits = np.unpackbits(codes, axis=-1, bitorder="little")
    for j in (0, 5, 63, 64, 200, 255):
        assert ((words[:, j // 64] >> np.uint64(j % 64)) & np.uint64(1)).tolist() == bits[
            :, j
        ].tolist()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (np.zeros((2, 2, 8)), InvalidVectorError),
        (np.ones(7), DimensionError),
        (np.ones((3, 9)), DimensionError),
        (np.array([1.0, np.nan] + [0.0] * 6), InvalidVectorError),
        (np.array([np.inf] + [0.0] * 7), InvalidVectorError),
        (np.zeros(8), InvalidVectorError),
        (["a"] * 8, InvalidVectorError),
        (np.ones(8) * (1 + 1j), InvalidVectorError),  # not silently the real part
    ],
)
def test_encoder_validation(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        BinaryEncoder(8).encode(value)  # type: ignore[arg-type]


def test_dimension_error_names_dims() -> None:
    with pytest.raises(DimensionError, match=r"7.*8"):
        validate_vector(np.ones(7), 8)


def test_validate_vector_normalizes() -> None:
    with pytest.raises(InvalidVectorError, match="real numbers"):
        validate_vector(np.array([1 + 2j, 3.0]), 2)
    for bad in ([np.nan, 1.0], [np.inf, 1.0], [0.0, 0.0]):
        with pytest.raises(InvalidVectorError):
            validate_vector(bad, 2)
    v = validate_vector([3.0, 4.0], 2)
    assert v.dtype == np.float32 and np.allclose(v, [0.6, 0.8])
    assert np.allclose(validate_vector([1e200, 0.0], 2), [1.0, 0.0])
    with pytest.raises(InvalidVectorError):
        validate_vector(np.ones((1, 2)), 2)


def test_encoder_rejects_bad_code_bits() -> None:
    with pytest.raises(InvalidInputError):
        BinaryEncoder(8, code_bits=100)


# --------------------------------------------------------------------------- hamming


def _halves(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(codes[:, :16]), np.ascontiguousarray(codes[:, 16:])


def _reference(codes: np.ndarray, q: np.ndarray, k: int, partitions: np.ndarray | None = None,
               partition: int | None = None, expires: np.ndarray | None = None,
               now_u32: int | None = None, half_cut: int | None = None,
               full_cut: int = 256) -> tuple[np.ndarray, np.ndarray]:
    d = hamming_naive(codes, q)
    ok = np.ones(d.shape[0], dtype=bool)
    if partitions is not None:
        ok &= (partitions == partition) if partition is not None else (partitions >= 0)
    if expires is not None:
        ok &= expires > now_u32
    if half_cut is not None:
        ok &= (hamming_naive(codes[:, :16], q[:16]) <= half_cut) & (d <= full_cut)
    idx = np.flatnonzero(ok)
    order = np.lexsort((idx, d[idx]))[:k]
    return idx[order], d[idx][order]


@pytest.mark.parametrize("n", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_topk_matches_naive(n: int) -> None:
    rng = np.random.default_rng(n)
    ws = Workspace(CHUNK)
    for trial in range(12):
        codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        q = rng.integers(0, 256, 32, dtype=np.uint8)
        if n:
            codes[rng.integers(0, n, 3)] = codes[rng.integers(0, n)]  # ties
            if trial % 3 == 0:
                codes[rng.integers(0, n)] = q  # distance 0
            if trial % 4 == 0:
                codes[rng.integers(0, n)] = ~q  # distance 256
        parts = rng.integers(-1, 3, n).astype(np.int32)
        exp = rng.integers(0, 10, n).astype(np.uint32)
        k = int(rng.integers(1, 25))
        cases = [
            {},
            {"partition": 1, "partitions": parts},
            {"partitions": parts},
            {"expires": exp, "now_u32": 4},
            {"partition": 2, "partitions": parts, "expires": exp, "now_u32": 6},
        ]
        for kw in cases:
            for cut in ({}, {"half_cut": 60, "full_cut": 120}):
                idx, dist = topk(*_halves(codes), q, k, workspace=ws, kernel=NUMPY,
                                 **kw, **cut)  # type: ignore[arg-type]
                ref_i, ref_d = _reference(codes, q, k, kw.get("partitions"),
                                          kw.get("partition"), kw.get("expires"),
                                          kw.get("now_u32"), **cut)  # type: ignore[arg-type]
                assert idx.dtype == np.int64 and dist.dtype == np.int32
                assert np.array_equal(idx, ref_i), (kw, cut)
                assert np.array_equal(dist, ref_d), (kw, cut)


def test_filtered_rows_never_hide_valid_ones() -> None:
    # 3 valid rows far from the query, thousands of invalid rows equal to it.
    rng = np.random.default_rng(5)
    n = 5 * CHUNK
    q = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = np.tile(q, (n, 1))
    parts = np.zeros(n, dtype=np.int32)
    exp = np.full(n, EXPIRES_NEVER, dtype=np.uint32)
    valid = [7, CHUNK * 2 + 3, n - 1]
    parts[valid] = 1
    codes[valid] = ~q
    exp[100:200] = 0
    parts[300] = -1
    lo, hi = _halves(codes)
    ws = Workspace(CHUNK)
    idx, dist = topk(lo, hi, q, 10, partition=1, partitions=parts, workspace=ws, kernel=NUMPY)
    assert idx.tolist() == valid and dist.tolist() == [256] * 3
    # expired / dead rows never come back, even when they are the closest
    idx, _ = topk(lo, hi, q, n, partitions=parts, expires=exp, now_u32=5, workspace=ws,
                  kernel=NUMPY)
    got = set(idx.tolist())
    assert not got & set(range(100, 200)) and 300 not in got
    assert len(got) == n - 101


def test_topk_count_limits_rows() -> None:
    codes = np.random.default_rng(0).integers(0, 256, (1000, 32), dtype=np.uint8)
    q = codes[900]
    idx, _ = topk(*_halves(codes), q, 5, count=500)
    assert idx.max() < 500
    idx, dist = topk(*_halves(codes), q, 1)
    assert idx.tolist() == [900] and dist.tolist() == [0]


def test_topk_rejects_bad_inputs() -> None:
    lo, hi = _halves(np.zeros((4, 32), dtype=np.uint8))
    q = np.zeros(32, dtype=np.uint8)
    with pytest.raises(InvalidInputError):
        topk(lo, hi, np.zeros(3, dtype=np.uint8), 1)
    with pytest.raises(InvalidInputError):
        topk(lo, hi, q, 1, partition=0)
    with pytest.raises(InvalidInputError):
        topk(lo.astype(np.int64), hi, q, 1)
    with pytest.raises(InvalidInputError):
        topk(np.asfortranarray(np.zeros((4, 16), dtype=np.uint8)), hi, q, 1)


# --------------------------------------------------------------------------- mirror


def _rows(n: int, seed: int = 0, first_id: int = 1, step: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "entry_ids": np.arange(first_id, first_id + step * n, step, dtype=np.int64),
        "partitions": rng.integers(0, 3, n).astype(np.int32),
        "expires": np.where(rng.random(n) < 0.3, 1000, EXPIRES_NEVER).astype(np.uint32),
        "codes_u8": rng.integers(0, 256, (n, 32), dtype=np.uint8),
    }


def _brute(rows: dict[str, np.ndarray], q: np.ndarray, k: int, **kw: object):
    """Expected search result from the rows the test wrote."""
    d = hamming_naive(rows["codes_u8"], q)
    ok = rows["partitions"] >= 0
    if kw.get("partition") is not None:
        ok &= rows["partitions"] == kw["partition"]
    ok &= rows["expires"] > int(np.floor(kw["now"]))  # type: ignore[call-overload]
    idx = np.flatnonzero(ok)
    order = np.lexsort((idx, d[idx]))[:k]
    return list(zip(rows["entry_ids"][idx][order].tolist(), d[idx][order].tolist(), strict=True))


@pytest.fixture
def mpath(tmp_path: Path) -> str:
    return str(tmp_path / "llm.db-codes")


def test_mirror_roundtrip(mpath: str) -> None:
    rows = _rows(300)
    m = CodeMirror.create(mpath, "db-1", (10, -7), **rows)
    assert (m.count, m.seq, m.state, m.capacity, m.dead_count) == (300, 10, (10, -7), 1024, 0)
    assert m.run_count == 300  # ids 1, 4, 7, ...: every row starts a run
    m.close()
    r = CodeMirror.open(mpath, "db-1")
    assert not r.verified and r.verify_step() and r.verified
    q = rows["codes_u8"][17]
    for part in (None, 0, 2):
        for now in (0.0, 999.5, 1000.0):
            got = r.search(q, 7, partition=part, now=now)
            assert got == _brute(rows, q, 7, partition=part, now=now)
            assert r.search(q.view("<u8"), 7, partition=part, now=now) == got  # words too
    got = r.read_rows(np.arange(300))
    assert np.array_equal(got["codes"], rows["codes_u8"])
    assert np.array_equal(got["entry_ids"], rows["entry_ids"])
    r.close()


def test_mirror_is_40_bytes_a_row_with_consecutive_ids(mpath: str) -> None:
    n = 5000
    rows = _rows(n, step=1)
    m = CodeMirror.create(mpath, "db-1", (1, 1), **rows, capacity=n)
    assert m.run_count == 1
    assert ROW_BYTES == 40
    assert os.path.getsize(mpath) == HEADER_SIZE + 40 * n + 16 * 64 + 8  # + run table, sums
    more = _rows(100, seed=2, first_id=n + 1, step=1)  # appended ids continue the run
    m.close()
    m = CodeMirror.create(mpath, "db-1", (1, 1), **rows)
    m.append(**more)
    assert m.run_count == 1 and m.max_entry_id == n + 100
    assert m.rows_of(np.array([1, n, n + 1, n + 100, n + 101]))[1].tolist() == \
        [1, n, n + 1, n + 100]
    m.close()


def test_mirror_writer_ops(mpath: str) -> None:
    rows = _rows(100)
    m = CodeMirror.create(mpath, "db-1", (1, 1), **rows)
    more = _rows(50, seed=1, first_id=1000, step=1)
    with m.update((2, 22)):
        assert m.append(**more) is False
    assert m.state == (2, 22)
    allrows = {k: np.concatenate((rows[k], more[k])) for k in rows}
    ids = allrows["entry_ids"]
    assert m.mark_dead(np.array([ids[3], ids[120], 999_999])) == 2
    allrows["partitions"][[3, 120]] = -1
    assert m.set_expires(np.array([ids[5], ids[6], 424242]), np.array([50, EXPIRES_NEVER, 7])) == 2
    allrows["expires"][[5, 6]] = [50, EXPIRES_NEVER]
    m.set_state((5, 55))
    assert (m.count, m.live_count, m.dead_count, m.seq) == (150, 148, 2, 5)
    assert m.max_entry_id == int(ids[-1])
    with pytest.raises(InvalidInputError):
        m.append(**_rows(1, first_id=int(ids[-1])))  # id not above the last one
    reader = CodeMirror.open(mpath, "db-1")
    reader.verify_all()  # the incrementally kept block checksums add up
    assert reader.state == (5, 55)
    for i in (3, 5, 120, 140):
        q = allrows["codes_u8"][i]
        for part in (None, 1):
            for now in (0.0, 60.0, 2000.0):
                got = reader.search(q, 200, partition=part, now=now)
                assert got == _brute(allrows, q, 200, partition=part, now=now)
    m.close()
    reader.close()


def test_reader_sees_writer_after_reload(mpath: str) -> None:
    rows = _rows(10)
    w = CodeMirror.create(mpath, "db-1", (1, 1), **rows)
    r = CodeMirror.open(mpath, "db-1")
    assert r.header_unchanged()
    more = _rows(5, seed=3, first_id=100)
    with w.update((2, 2)):
        w.append(**more)
    assert r.count == 10 and not r.header_unchanged()
    r.reload_header()
    assert (r.count, r.seq) == (15, 2) and r.header_unchanged()
    q = more["codes_u8"][2]
    assert r.search(q, 1, partition=None, now=0)[0] == (int(more["entry_ids"][2]), 0)
    w.close()
    r.close()


def test_block_checks_wait_for_a_busy_writer(mpath: str) -> None:
    w = CodeMirror.create(mpath, "db-1", (1, 1), **_rows(50))
    r = CodeMirror.open(mpath, "db-1")
    with w.update((2, 2)):
        w.mark_dead(_rows(50)["entry_ids"][:5])
        assert r.verify_step() is False and not r.verified  # mid-update: later
    assert r.verify_step() is True
    w.close()
    r.close()


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


@pytest.mark.parametrize("where", ["magic", "header_count", "header_crc", "header_padding"])
def test_header_damage_detected_at_open(mpath: str, where: str) -> None:
    CodeMirror.create(mpath, "db-1", (1, 1), **_rows(200)).close()
    _flip(mpath, {"magic": 0, "header_count": 24, "header_crc": 125,
                  "header_padding": 2000}[where])
    with pytest.raises(MirrorInvalid):
        CodeMirror.open(mpath, "db-1")


@pytest.mark.parametrize("where", ["lo", "hi", "partitions", "expires", "runs", "sums"])
def test_data_damage_detected_by_the_block_checks(mpath: str, where: str) -> None:
    n, cap = 200, 1024
    CodeMirror.create(mpath, "db-1", (1, 1), **_rows(n), capacity=cap).close()
    offsets = {
        "lo": HEADER_SIZE + 16 * 17 + 3,
        "hi": HEADER_SIZE + 16 * cap + 16 * (n - 1),
        "partitions": HEADER_SIZE + 32 * cap + 4 * 50,
        "expires": HEADER_SIZE + 36 * cap + 4 * 7,
        "runs": HEADER_SIZE + 40 * cap + 8 * 67,  # run_rows[67] (200 runs)
        "sums": HEADER_SIZE + 40 * cap + 16 * 400,  # block_sums[0] (run capacity 400)
    }
    _flip(mpath, offsets[where])
    m = CodeMirror.open(mpath, "db-1")  # the header is fine: opening costs O(1)
    with pytest.raises(MirrorInvalid):
        m.verify_step()
    m.close()


def test_truncation_and_wrong_uid(mpath: str) -> None:
    CodeMirror.create(mpath, "db-1", (1, 1), **_rows(50)).close()
    with pytest.raises(MirrorInvalid):
        CodeMirror.open(mpath, "db-2")
    size = os.path.getsize(mpath)
    os.truncate(mpath, size - 8)
    with pytest.raises(MirrorInvalid):
        CodeMirror.open(mpath, "db-1")
    os.truncate(mpath, 100)
    with pytest.raises(MirrorInvalid):
        CodeMirror.open(mpath, "db-1")
    with pytest.raises(FileNotFoundError):
        CodeMirror.open(mpath + "-missing", "db-1")
    os.mkdir(mpath + "-dir")
    with pytest.raises((MirrorInvalid, OSError)):
        CodeMirror.open(mpath + "-dir", "db-1")


def test_size_check_sees_truncation_under_the_map(mpath: str) -> None:
    m = CodeMirror.create(mpath, "db-1", (1, 1), **_rows(50))
    r = CodeMirror.open(mpath, "db-1")
    assert r.size_ok()
    os.truncate(mpath, 4096)
    assert not r.size_ok() and not m.size_ok()  # touching the rows now would be a SIGBUS
    r.close()
    m.close()
    assert not r.size_ok()


def test_growth_and_stale_reader(mpath: str) -> None:
    rows = _rows(1000)
    w = CodeMirror.create(mpath, "db-1", (1, 1), **rows, capacity=1024)
    old_reader = CodeMirror.open(mpath, "db-1")
    w.mark_dead(rows["entry_ids"][:10])
    more = _rows(100, seed=9, first_id=10_000)
    with w.update((3, 3)):
        assert w.append(**more) is True  # 1100 > 1024: a new file was published
    assert w.capacity >= 2 * 1090 and w.count == 1090 and w.dead_count == 0
    assert old_reader.count == 1000
    assert not old_reader.is_current()
    # the stale map still answers from what it had
    q = rows["codes_u8"][500]
    assert old_reader.search(q, 1, partition=None, now=0)[0][1] == 0
    fresh = CodeMirror.open(mpath, "db-1")
    assert fresh.is_current() and (fresh.count, fresh.state) == (1090, (3, 3))
    fresh.verify_all()
    q = more["codes_u8"][42]
    assert fresh.search(q, 1, partition=None, now=0)[0] == (int(more["entry_ids"][42]), 0)
    assert not any(e < rows["entry_ids"][10]
                   for e, _ in fresh.search(q, 2000, partition=None, now=0))
    for m in (w, old_reader, fresh):
        m.close()
    assert not [p for p in os.listdir(os.path.dirname(mpath)) if ".tmp-" in p]


def test_run_table_growth(mpath: str) -> None:
    """Sparse ids need a run each; a full run table re-creates the file like full rows."""
    w = CodeMirror.create(mpath, "db-1", (1, 1), **_rows(10))  # run capacity 64
    for i in range(100):
        w.append(**_rows(1, seed=i, first_id=1000 + 10 * i))
    assert w.run_count == 110 and w.count == 110
    r = CodeMirror.open(mpath, "db-1")
    r.verify_all()
    assert r.rows_of(np.array([1000 + 10 * 57]))[0].tolist() == [67]
    w.close()
    r.close()


def test_reader_survives_replace_by_create(mpath: str) -> None:
    CodeMirror.create(mpath, "db-1", (1, 1), **_rows(20)).close()
    r = CodeMirror.open(mpath, "db-1")
    CodeMirror.create(mpath, "db-1", (2, 2), **_rows(30, seed=4)).close()
    assert r.search(np.zeros(32, dtype=np.uint8), 3, partition=None, now=0)
    assert not r.is_current()
    r.close()
    r2 = CodeMirror.open(mpath, "db-1")
    assert (r2.count, r2.seq) == (30, 2) and r2.is_current()
    r2.close()


def test_expires_to_u32() -> None:
    assert CodeMirror.expires_to_u32(None) == EXPIRES_NEVER
    assert CodeMirror.expires_to_u32(10.2) == 11
    assert CodeMirror.expires_to_u32(10.0) == 10
    assert CodeMirror.expires_to_u32(-5.0) == 0
    assert CodeMirror.expires_to_u32(1e12) == EXPIRES_NEVER - 1


def test_empty_mirror_and_closed(mpath: str) -> None:
    rows = _rows(0)
    m = CodeMirror.create(mpath, b"\x00" * 16, (0, 0), **rows)
    assert m.search(np.zeros(32, dtype=np.uint8), 5, partition=None, now=0) == []
    assert m.max_entry_id == -1
    m.append(**_rows(3))
    assert len(m.search(np.zeros(32, dtype=np.uint8), 5, partition=None, now=0)) == 3
    m.close()
    m.close()
    with pytest.raises(MirrorInvalid):
        m.search(np.zeros(32, dtype=np.uint8), 5, partition=None, now=0)
