"""Values that cross to PostgreSQL in a form of their own: codes and float vectors.

* Codes (32 bytes) travel as bit-string literals (``'x' + hex``) cast to ``bit(256)``.
* Vectors are stored by semcache as little-endian float32 bytes (the SQLite engine keeps
  exactly these). With pgvector they go to a ``vector`` column in its binary wire format
  (uint16 dim, uint16 unused, big-endian float32 values); they come back the same way and
  are turned into the same little-endian bytes, so a vector round-trips bit for bit.
  Without pgvector the column is ``bytea`` and holds the bytes as they are.

The dumper and loader are registered per connection with the type's OID, which differs
per database (it is looked up at open), so nothing is registered globally.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.pq import Format


def code_literal(code: bytes) -> str:
    """A 32-byte code as the bit-string literal that ``%s::bit(256)`` accepts."""
    return "x" + code.hex()


class PgVector:
    """Little-endian float32 bytes to be sent as a pgvector ``vector``."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def vector_from(vector: np.ndarray | bytes) -> PgVector:
    if isinstance(vector, bytes):
        return PgVector(vector)
    return PgVector(np.ascontiguousarray(vector, dtype="<f4").tobytes())


class _VectorBinaryDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> Buffer:
        data = obj.data
        n = len(data) // 4
        return struct.pack(">HH", n, 0) + np.frombuffer(data, dtype="<f4").astype(">f4").tobytes()


class _VectorBinaryLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        raw = bytes(data)
        (n,) = struct.unpack_from(">H", raw)
        return np.frombuffer(raw, dtype=">f4", count=n, offset=4).astype("<f4").tobytes()


class _VectorTextLoader(Loader):
    format = Format.TEXT

    def load(self, data: Buffer) -> bytes:
        text = bytes(data).decode("ascii").strip("[]")
        return np.array(text.split(",") if text else [], dtype="<f4").tobytes()


def register_vector(conn: psycopg.Connection, oid: int) -> None:
    """Teach one connection pgvector's ``vector`` (OID ``oid`` in this database)."""
    dumper = type("VectorDumper", (_VectorBinaryDumper,), {"oid": oid})
    conn.adapters.register_dumper(PgVector, dumper)
    conn.adapters.register_loader(oid, _VectorBinaryLoader)
    conn.adapters.register_loader(oid, _VectorTextLoader)


__all__ = ["PgVector", "code_literal", "register_vector", "vector_from"]
