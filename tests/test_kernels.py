"""Tests of semcache.kernels: encoder, Hamming scan, code mirror."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from semcache.errors import DimensionError, InvalidInputError, InvalidVectorError
from semcache.kernels.hamming import Workspace, hamming_naive, hamming_topk
from semcache.kernels.mirror import EXPIRES_NEVER, HEADER_SIZE, CodeMirror, MirrorInvalid
from semcache.kernels.projection import BinaryEncoder, validate_vector

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
    assert np.array_equal(bits, (x @ w.astype(np.float64)) > 0)
    # single vector == row of the batch; scaling does not change the code
    assert np.array_equal(enc.encode(x[4]), enc.encode(x)[4])
    assert np.array_equal(enc.encode(x[4] * 1e-30), enc.encode(x[4]))


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
    ],
)
def test_encoder_validation(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        BinaryEncoder(8).encode(value)  # type: ignore[arg-type]


def test_dimension_error_names_dims() -> None:
    with pytest.raises(DimensionError, match=r"7.*8"):
        validate_vector(np.ones(7), 8)


def test_validate_vector_normalizes() -> None:
    v = validate_vector([3.0, 4.0], 2)
    assert v.dtype == np.float32 and np.allclose(v, [0.6, 0.8])
    assert np.allclose(validate_vector([1e200, 0.0], 2), [1.0, 0.0])
    with pytest.raises(InvalidVectorError):
        validate_vector(np.ones((1, 2)), 2)


def test_encoder_rejects_bad_code_bits() -> None:
    with pytest.raises(InvalidInputError):
        BinaryEncoder(8, code_bits=100)


# --------------------------------------------------------------------------- hamming


def _columns(codes: np.ndarray) -> list[np.ndarray]:
    words = codes.view("<u8")
    return [np.ascontiguousarray(words[:, i]) for i in range(4)]


def _reference(
    codes: np.ndarray,
    q: np.ndarray,
    k: int,
    partitions: np.ndarray | None = None,
    partition: int | None = None,
    expires: np.ndarray | None = None,
    now_u32: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    d = hamming_naive(codes, q)
    ok = np.ones(d.shape[0], dtype=bool)
    if partitions is not None:
        ok &= (partitions == partition) if partition is not None else (partitions >= 0)
    if expires is not None:
        ok &= expires > now_u32
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
            idx, dist = hamming_topk(*_columns(codes), q.view("<u8"), k, workspace=ws, **kw)
            ref_i, ref_d = _reference(
                codes,
                q,
                k,
                kw.get("partitions"),
                kw.get("partition"),
                kw.get("expires"),
                kw.get("now_u32"),
            )
            assert idx.dtype == np.int64 and dist.dtype == np.int32
            assert np.array_equal(idx, ref_i), kw
            assert np.array_equal(dist, ref_d), kw


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
    cols = _columns(codes)
    ws = Workspace(CHUNK)
    idx, dist = hamming_topk(*cols, q.view("<u8"), 10, partition=1, partitions=parts, workspace=ws)
    assert idx.tolist() == valid and dist.tolist() == [256] * 3
    # expired / dead rows never come back, even when they are the closest
    idx, _ = hamming_topk(
        *cols, q.view("<u8"), n, partitions=parts, expires=exp, now_u32=5, workspace=ws
    )
    got = set(idx.tolist())
    assert not got & set(range(100, 200)) and 300 not in got
    assert len(got) == n - 101


def test_topk_count_limits_rows() -> None:
    codes = np.random.default_rng(0).integers(0, 256, (1000, 32), dtype=np.uint8)
    q = codes[900]
    idx, _ = hamming_topk(*_columns(codes), q.view("<u8"), 5, count=500)
    assert idx.max() < 500
    idx, dist = hamming_topk(*_columns(codes), q.view("<u8"), 1)
    assert idx.tolist() == [900] and dist.tolist() == [0]


def test_topk_rejects_bad_inputs() -> None:
    cols = _columns(np.zeros((4, 32), dtype=np.uint8))
    q = np.zeros(4, dtype=np.uint64)
    with pytest.raises(InvalidInputError):
        hamming_topk(*cols, np.zeros(3, dtype=np.uint64), 1)
    with pytest.raises(InvalidInputError):
        hamming_topk(*cols, q, 1, partition=0)
    with pytest.raises(InvalidInputError):
        hamming_topk(cols[0].astype(np.int64), *cols[1:], q, 1)


# --------------------------------------------------------------------------- mirror


def _rows(n: int, seed: int = 0, first_id: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "entry_ids": np.arange(first_id, first_id + 3 * n, 3, dtype=np.int64),
        "partitions": rng.integers(0, 3, n).astype(np.int32),
        "expires": np.where(rng.random(n) < 0.3, 1000, EXPIRES_NEVER).astype(np.uint32),
        "codes_u8": rng.integers(0, 256, (n, 32), dtype=np.uint8),
    }


def _brute(m: CodeMirror, rows: dict[str, np.ndarray], q: np.ndarray, k: int, **kw: object):
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
    m = CodeMirror.create(mpath, "db-1", 10, **rows)
    assert (m.count, m.seq, m.capacity, m.dead_count) == (300, 10, 1024, 0)
    assert os.path.getsize(mpath) == HEADER_SIZE + 48 * 1024
    m.close()
    r = CodeMirror.open(mpath, "db-1")
    q = rows["codes_u8"][17]
    for part in (None, 0, 2):
        for now in (0.0, 999.5, 1000.0):
            got = r.search(q.view("<u8"), 7, partition=part, now=now)
            assert got == _brute(r, rows, q, 7, partition=part, now=now)
    got = r.read_rows(np.arange(300))
    assert np.array_equal(got["codes"], rows["codes_u8"])
    assert np.array_equal(got["entry_ids"], rows["entry_ids"])
    r.close()


def test_mirror_writer_ops(mpath: str) -> None:
    rows = _rows(100)
    m = CodeMirror.create(mpath, "db-1", 1, **rows)
    more = _rows(50, seed=1, first_id=1000)
    assert m.append(**more, seq=2) is False
    allrows = {k: np.concatenate((rows[k], more[k])) for k in rows}
    ids = allrows["entry_ids"]
    assert m.mark_dead(np.array([ids[3], ids[120], 999_999]), seq=3) == 2
    allrows["partitions"][[3, 120]] = -1
    assert m.set_expires(np.array([ids[5], ids[6]]), np.array([50, EXPIRES_NEVER]), seq=4) == 2
    allrows["expires"][[5, 6]] = [50, EXPIRES_NEVER]
    m.set_seq(5)
    assert (m.count, m.live_count, m.dead_count, m.seq) == (150, 148, 2, 5)
    assert m.max_entry_id == int(ids[-1])
    with pytest.raises(InvalidInputError):
        m.append(**_rows(1, first_id=int(ids[-1])), seq=6)  # id not above the last one
    reader = CodeMirror.open(mpath, "db-1")  # verifies the incrementally kept checksum
    assert reader.seq == 5
    for i in (3, 5, 120, 140):
        q = allrows["codes_u8"][i]
        for part in (None, 1):
            for now in (0.0, 60.0, 2000.0):
                got = reader.search(q.view("<u8"), 200, partition=part, now=now)
                assert got == _brute(reader, allrows, q, 200, partition=part, now=now)
    m.close()
    reader.close()


def test_reader_sees_writer_after_reload(mpath: str) -> None:
    rows = _rows(10)
    w = CodeMirror.create(mpath, "db-1", 1, **rows)
    r = CodeMirror.open(mpath, "db-1")
    more = _rows(5, seed=3, first_id=100)
    w.append(**more, seq=2)
    assert r.count == 10
    r.reload_header()
    assert (r.count, r.seq) == (15, 2)
    q = more["codes_u8"][2]
    assert r.search(q.view("<u8"), 1, partition=None, now=0)[0] == (int(more["entry_ids"][2]), 0)
    w.close()
    r.close()


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


@pytest.mark.parametrize(
    "where",
    ["magic", "header_count", "header_crc", "header_padding", "code_w0", "code_w3", "ids", "exp"],
)
def test_corruption_detected(mpath: str, where: str) -> None:
    n, cap = 200, 1024
    CodeMirror.create(mpath, "db-1", 1, **_rows(n), capacity=cap).close()
    offsets = {
        "magic": 0,
        "header_count": 24,
        "header_crc": 125,
        "header_padding": 2000,
        "code_w0": HEADER_SIZE + 8 * 17 + 3,
        "code_w3": HEADER_SIZE + 3 * 8 * cap + 8 * (n - 1),
        "ids": HEADER_SIZE + 32 * cap + 8 * 50,
        "exp": HEADER_SIZE + 44 * cap + 4 * 7,
    }
    _flip(mpath, offsets[where])
    with pytest.raises(MirrorInvalid):
        CodeMirror.open(mpath, "db-1")


def test_truncation_and_wrong_uid(mpath: str) -> None:
    CodeMirror.create(mpath, "db-1", 1, **_rows(50)).close()
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


def test_growth_and_stale_reader(mpath: str) -> None:
    rows = _rows(1000)
    w = CodeMirror.create(mpath, "db-1", 1, **rows, capacity=1024)
    old_reader = CodeMirror.open(mpath, "db-1")
    w.mark_dead(rows["entry_ids"][:10], seq=2)
    more = _rows(100, seed=9, first_id=10_000)
    assert w.append(**more, seq=3) is True  # 1100 > 1024: a new file was published
    assert w.capacity >= 2 * 1090 and w.count == 1090 and w.dead_count == 0
    assert old_reader.count == 1000
    assert not old_reader.is_current()
    # the stale map still answers from what it had
    q = rows["codes_u8"][500]
    assert old_reader.search(q.view("<u8"), 1, partition=None, now=0)[0][1] == 0
    fresh = CodeMirror.open(mpath, "db-1")
    assert fresh.is_current() and (fresh.count, fresh.seq) == (1090, 3)
    q = more["codes_u8"][42]
    assert fresh.search(q.view("<u8"), 1, partition=None, now=0)[0] == (
        int(more["entry_ids"][42]),
        0,
    )
    assert not any(
        e < rows["entry_ids"][10]
        for e, _ in fresh.search(q.view("<u8"), 2000, partition=None, now=0)
    )
    for m in (w, old_reader, fresh):
        m.close()
    assert not [p for p in os.listdir(os.path.dirname(mpath)) if ".tmp-" in p]


def test_reader_survives_replace_by_create(mpath: str) -> None:
    CodeMirror.create(mpath, "db-1", 1, **_rows(20)).close()
    r = CodeMirror.open(mpath, "db-1")
    CodeMirror.create(mpath, "db-1", 2, **_rows(30, seed=4)).close()
    assert r.search(np.zeros(4, dtype=np.uint64), 3, partition=None, now=0)
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
    m = CodeMirror.create(mpath, b"\x00" * 16, 0, **rows)
    assert m.search(np.zeros(4, dtype=np.uint64), 5, partition=None, now=0) == []
    assert m.max_entry_id == -1
    m.append(**_rows(3), seq=1)
    assert len(m.search(np.zeros(4, dtype=np.uint64), 5, partition=None, now=0)) == 3
    m.close()
    m.close()
    with pytest.raises(MirrorInvalid):
        m.search(np.zeros(4, dtype=np.uint64), 5, partition=None, now=0)
