"""Typed entry filters compiled to a SQL ``WHERE`` clause, shared by the SQL engines.

Callers above the store describe *which* entries they mean with an
:class:`~semcache.store.base.EntryFilter`; only this module turns that into SQL, always
with bound parameters, never with caller text interpolated.
"""

from __future__ import annotations

from typing import Any

from semcache.store.base import EntryFilter, EntryOrder

#: ORDER BY of each :data:`EntryOrder` (``e`` is the entries table, ``id`` breaks ties).
ORDER_SQL: dict[str, str] = {
    "id": "e.id ASC",
    "newest": "e.created_at DESC, e.id DESC",
    "oldest": "e.created_at ASC, e.id ASC",
    "hits": "e.hits DESC, e.id DESC",
    "accessed": "e.accessed_at DESC, e.id DESC",
}


#: The condition of each :class:`EntryFilter` field that selects by one value.
_CONDITIONS = (
    ("namespace", "e.namespace = ?"),
    ("expired_at", "e.expires_at IS NOT NULL AND e.expires_at <= ?"),
    ("live_at", "(e.expires_at IS NULL OR e.expires_at > ?)"),
    ("created_before", "e.created_at < ?"),
    ("key_hash", "e.key_hash = ?"),
    ("prompt", "e.prompt = ?"),
    ("scope", "p.scope = ?"),
)


def compile_filter(where: EntryFilter, mark: str = "?") -> tuple[str, list[Any]]:
    """``(sql, params)`` for ``where`` over ``entries e JOIN partitions p``.

    ``mark`` is the driver's placeholder (``?`` for SQLite, ``%s`` for psycopg).
    """
    parts: list[str] = []
    params: list[Any] = []
    for name, sql in _CONDITIONS:
        value = getattr(where, name)
        if value is not None:
            parts.append(sql.replace("?", mark))
            params.append(value)
    if where.ids is not None:
        parts.append("e.id IN (" + ", ".join([mark] * len(where.ids)) + ")" if where.ids
                     else "1 = 0")
        params.extend(where.ids)
    if where.scoped is not None:
        parts.append("p.scope != ''" if where.scoped else "p.scope = ''")
    return (" AND ".join(parts) if parts else "1 = 1"), params


def order_sql(order: EntryOrder) -> str:
    try:
        return ORDER_SQL[order]
    except KeyError:
        raise ValueError(f"unknown entry order {order!r}; expected one of "
                         f"{sorted(ORDER_SQL)}") from None


__all__ = ["ORDER_SQL", "compile_filter", "order_sql"]
