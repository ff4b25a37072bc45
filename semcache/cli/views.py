"""``semcache stats | ls | show | get | verify``: read-only views of a cache.

Each command calls the library's public API (:class:`semcache.Cache`, :func:`semcache.verify`)
and only formats what it returns.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import semcache
from semcache.cli import output as fmt
from semcache.cli.common import CLIError, answer_text, open_cache


def cmd_stats(args: argparse.Namespace) -> int:
    with open_cache(args) as cache:
        stats = cache.stats()
        settings = cache.settings
        namespaces: list[dict[str, Any]] = [{"namespace": n.namespace, "entries": n.entries, "expired": n.expired,
                                              "hits": n.hits, "bytes": n.bytes}
                                             for n in cache.namespaces()]
    if args.json:
        fmt.print_json({"path": args.shown, "stats": stats, "settings": settings,
                        "namespaces": namespaces})
        return 0
    print(f"semcache cache {args.shown}")
    print(fmt.key_values(_stats_rows(stats, settings)))
    if namespaces:
        print()
        print(fmt.table(["namespace", "entries", "expired", "hits", "size"],
                        [[n["namespace"], n["entries"], n["expired"], n["hits"],
                          fmt.human_bytes(n["bytes"])] for n in namespaces], "lrrrr"))
    return 0


def _stats_rows(stats: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, Any]]:
    embedder = settings["embedder"]
    return [
        ("entries", stats["entries"]),
        ("hits", f"{stats['hits']} ({stats['exact_hits']} exact, "
                 f"{stats['semantic_hits']} semantic)"),
        ("misses", stats["misses"]),
        ("hit rate", f"{stats['hit_rate'] * 100:.1f}%"),
        ("guard rejections", stats.get("guard_rejections", 0)),
        ("puts", stats["puts"]),
        ("evictions", stats["evictions"]),
        ("expirations", stats["expirations"]),
        ("tokens saved", stats["tokens_saved"]),
        ("bytes", f"{stats['bytes']} ({fmt.human_bytes(stats['bytes'])})"),
        ("file", fmt.human_bytes(stats["file_bytes"])),
        ("embedder", f"{embedder} (dim {settings['dim']})" if embedder else "none (hash-only)"),
        ("threshold", settings["similarity_threshold"]),
        *[(f"threshold [{ns}]", t) for ns, t in settings["namespace_thresholds"].items()],
        ("guard", "on" if settings["guard"] else "off"),
        ("ttl", "never" if settings["ttl"] is None else f"{settings['ttl']:g}s"),
        ("max entries", settings["max_entries"] or "unlimited"),
        ("max bytes", "unlimited" if settings["max_bytes"] is None else
         f"{settings['max_bytes']} ({fmt.human_bytes(settings['max_bytes'])})"),
    ]


def _model_of(metadata: dict[str, Any] | None) -> str | None:
    model = metadata.get("model") if isinstance(metadata, dict) else None
    return model if isinstance(model, str) else None


def cmd_ls(args: argparse.Namespace) -> int:
    now = time.time()
    expired = True if args.expired else (False if args.live else None)
    with open_cache(args) as cache:
        total = cache.count(namespace=args.namespace, expired=expired)
        entries = cache.entries(namespace=args.namespace, expired=expired, order=args.sort,
                                limit=None if args.limit == 0 else args.limit)
    items: list[dict[str, Any]] = [{
        "id": e.id, "namespace": e.namespace, "scope": e.scope, "prompt": e.prompt,
        "hits": e.hits, "tokens": e.tokens, "size": e.size, "created_at": e.created_at,
        "accessed_at": e.accessed_at, "expires_at": e.expires_at,
        "expired": e.expires_at is not None and e.expires_at <= now,
        "model": _model_of(e.metadata),
    } for e in entries]
    if args.json:
        fmt.print_json({"total": total, "entries": items})
        return 0
    if not items:
        print("no entries" + ("" if total else " in this cache"))
        return 0
    width = max(20, _terminal_width() - 75)
    print(fmt.table(
        ["id", "namespace", "model", "hits", "age", "expires", "size", "prompt"],
        [[i["id"], fmt.one_line(i["namespace"], 16), fmt.one_line(i["model"], 14), i["hits"],
          fmt.human_duration(now - i["created_at"]), fmt.expiry_text(i["expires_at"], now),
          fmt.human_bytes(i["size"]), fmt.one_line(i["prompt"], width)] for i in items],
        "rllrrlrl"))
    if total > len(items):
        print(f"({len(items)} of {total} entries shown; --limit 0 shows all)")
    return 0


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return 120


def cmd_show(args: argparse.Namespace) -> int:
    now = time.time()
    with open_cache(args) as cache:
        entry = cache.entry(args.id)
        if entry is None:
            raise CLIError(f"no entry with id {args.id} in {args.shown!r}")
    rec = {
        "id": entry.id, "key_hash": (entry.key_hash or b"").hex(), "namespace": entry.namespace,
        "scope": entry.scope, "prompt": entry.prompt, "response": entry.response,
        "metadata": entry.metadata, "tokens": entry.tokens, "size": entry.size,
        "created_at": entry.created_at, "accessed_at": entry.accessed_at,
        "expires_at": entry.expires_at, "ttl": entry.ttl, "hits": entry.hits,
        "vector_dim": None if entry.vector is None else int(entry.vector.shape[0]),
        "has_code": entry.has_code,
    }
    if args.json:
        fmt.print_json(rec)
        return 0
    _print_entry(rec, now)
    return 0


def _print_entry(rec: dict[str, Any], now: float) -> None:
    print(fmt.key_values([
        ("id", rec["id"]),
        ("namespace", rec["namespace"]),
        ("scope", rec["scope"] or "(plain prompts)"),
        ("key_hash", rec["key_hash"]),
        ("prompt", rec["prompt"] if rec["prompt"] is not None else "(not stored)"),
        ("created", f"{fmt.iso_time(rec['created_at'])} "
                    f"({fmt.human_duration(now - rec['created_at'])} ago)"),
        ("accessed", fmt.iso_time(rec["accessed_at"])),
        ("expires", f"{fmt.iso_time(rec['expires_at'])} "
                    f"({fmt.expiry_text(rec['expires_at'], now)})"
         if rec["expires_at"] is not None else "never"),
        ("ttl", "none" if rec["ttl"] is None else f"{rec['ttl']:g}s"),
        ("hits", rec["hits"]),
        ("tokens", rec["tokens"]),
        ("size", fmt.human_bytes(rec["size"])),
        ("vector", f"{rec['vector_dim']} floats" if rec["vector_dim"] else "none"),
        ("metadata", json.dumps(rec["metadata"], ensure_ascii=False)
         if rec["metadata"] is not None else None),
    ]))
    text = answer_text(rec["response"])
    if not isinstance(rec["response"], str) and text != json.dumps(rec["response"],
                                                                   ensure_ascii=False):
        print("answer:")
        print("  " + text.replace("\n", "\n  "))
    print("response:")
    print("  " + json.dumps(rec["response"], ensure_ascii=False, indent=2).replace("\n", "\n  "))


def cmd_get(args: argparse.Namespace) -> int:
    with open_cache(args) as cache:
        namespace = args.namespace if args.namespace is not None else cache.namespace
        threshold = cache.threshold(namespace)
        hit = cache.find(args.text, namespace=namespace, exact_only=args.exact_only)
    if hit is None:
        if args.json:
            fmt.print_json({"hit": False, "namespace": namespace, "threshold": threshold})
        else:
            print(f"MISS (namespace {namespace!r}, similarity threshold {threshold:g})")
        return 0
    out = {
        "hit": True, "kind": hit.kind, "similarity": round(float(hit.similarity), 6),
        "entry_id": hit.entry_id, "namespace": hit.namespace, "scope": hit.scope,
        "prompt": hit.prompt, "response": hit.response, "metadata": hit.metadata,
        "threshold": threshold,
    }
    if args.json:
        fmt.print_json(out)
        return 0
    print(f"HIT {hit.kind}  similarity={hit.similarity:.3f}  entry {hit.entry_id}  "
          f"namespace {hit.namespace!r}" + (f"  scope {hit.scope[:12]}" if hit.scope else ""))
    print(f"prompt: {hit.prompt if hit.prompt is not None else '(not stored)'}")
    print("answer:")
    print("  " + answer_text(hit.response).replace("\n", "\n  "))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    result = semcache.verify(args.path)
    ok = bool(result["ok"])
    if args.json:
        fmt.print_json(result)
    else:
        print(f"{result['path']}: {'OK' if ok else 'PROBLEMS FOUND'}")
        for key, value in result.items():
            if key in ("ok", "path"):
                continue
            if isinstance(value, list):
                for item in value:
                    print(f"  {key}: {item}")
            else:
                print(f"  {key}: {value}")
    return 0 if ok else 1


__all__ = ["cmd_get", "cmd_ls", "cmd_show", "cmd_stats", "cmd_verify"]
