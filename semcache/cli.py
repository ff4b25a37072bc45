"""The ``semcache`` command line (also ``python -m semcache``).

Look inside a cache file without writing Python::

    semcache stats llm.db            semcache ls llm.db --sort hits --limit 10
    semcache show llm.db 42          semcache get llm.db "What is the capital of France?"
    semcache purge llm.db --expired  semcache purge llm.db --older-than 7d
    semcache vacuum llm.db           semcache verify llm.db
    semcache export llm.db out.jsonl semcache import new.db out.jsonl
    semcache bench                   semcache demo

Every command prints a human-readable view by default and JSON with ``--json``.
Exit codes: 0 ok, 1 error (one line on stderr, no traceback), 2 usage error.

Inspection commands (stats, ls, show, get, verify, export) open the file read-only: they
never write to it (no settings, no hit counts) and only ``get`` loads the embedder. A
missing file is an error; only ``import`` creates one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from semcache import cli_format as fmt
from semcache.errors import (
    CacheFileError,
    InvalidInputError,
    NotASemcacheFileError,
    SemcacheError,
)

PROG = "semcache"


class CLIError(SemcacheError):
    """A command failed in a way the user can fix (message printed, exit status 1)."""


# -- opening files ---------------------------------------------------------------------------

def check_cache_path(path: str) -> None:
    """Refuse paths that are not an existing, non-empty file (nothing is created)."""
    if not os.path.exists(path):
        raise CacheFileError(f"no cache file at {path!r}")
    if os.path.isdir(path):
        raise CacheFileError(f"{path!r} is a directory, not a cache file")
    if os.path.getsize(path) == 0:
        raise NotASemcacheFileError(f"{path!r} is an empty file, not a semcache cache")


def read_file_settings(path: str) -> dict[str, str]:
    """The settings table of an existing cache file, read without changing it."""
    from semcache.store.sqlite import SQLiteStore

    store = SQLiteStore(path, readonly=True)
    try:
        return dict(store.settings)
    finally:
        store.close()


def open_cache(path: str, *, write: bool = False) -> Any:
    """Open an existing cache file for inspection (read-only) or maintenance (``write``).

    Never creates the file, never writes settings, and never loads the embedder model
    (it is loaded lazily, on the first text that needs embedding).
    """
    from semcache.cache import Cache

    check_cache_path(path)
    hash_only = "embedder" not in read_file_settings(path)
    return Cache(path, readonly=not write, use_mirror=write, hash_only=hash_only)


def _scope_label(scope: str) -> str:
    return "(prompts)" if scope == "" else scope[:12]


def _model_of(metadata: str | None) -> str | None:
    if not metadata:
        return None
    try:
        meta = json.loads(metadata)
    except ValueError:
        return None
    model = meta.get("model") if isinstance(meta, dict) else None
    return model if isinstance(model, str) else None


def answer_text(response: Any) -> str:
    """The text to show for a stored response: a chat completion's message content,
    a string as is, anything else as compact JSON."""
    if isinstance(response, str):
        return response
    if isinstance(response, dict) and isinstance(response.get("choices"), list):
        choices = response["choices"]
        if choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return message["content"]
    return json.dumps(response, ensure_ascii=False)


# -- stats -------------------------------------------------------------------------------

def cmd_stats(args: argparse.Namespace) -> int:
    now = time.time()
    with open_cache(args.path) as cache:
        stats = cache.stats()
        settings = cache.settings
        ns_rows = cache._store.query(
            "SELECT namespace, count(*), "
            "sum(expires_at IS NOT NULL AND expires_at <= ?), sum(hits), sum(size) "
            "FROM entries GROUP BY namespace ORDER BY count(*) DESC", (now,))
    namespaces = [{"namespace": ns, "entries": n, "expired": int(exp or 0),
                   "hits": int(h or 0), "bytes": int(b or 0)} for ns, n, exp, h, b in ns_rows]
    if args.json:
        fmt.print_json({"path": args.path, "stats": stats, "settings": settings,
                        "namespaces": namespaces})
        return 0
    print(f"semcache file {args.path}")
    print(fmt.key_values([
        ("entries", stats["entries"]),
        ("hits", f"{stats['hits']} ({stats['exact_hits']} exact, "
                 f"{stats['semantic_hits']} semantic)"),
        ("misses", stats["misses"]),
        ("hit rate", f"{stats['hit_rate'] * 100:.1f}%"),
        ("puts", stats["puts"]),
        ("evictions", stats["evictions"]),
        ("expirations", stats["expirations"]),
        ("tokens saved", stats["tokens_saved"]),
        ("data", fmt.human_bytes(stats["bytes"])),
        ("file", fmt.human_bytes(stats["file_bytes"])),
        ("embedder", f"{settings['embedder']} (dim {settings['dim']})"
         if settings["embedder"] else "none (hash-only)"),
        ("threshold", settings["similarity_threshold"]),
        ("ttl", "never" if settings["ttl"] is None else f"{settings['ttl']:g}s"),
        ("max entries", settings["max_entries"] or "unlimited"),
    ]))
    if namespaces:
        print()
        print(fmt.table(["namespace", "entries", "expired", "hits", "size"],
                        [[n["namespace"], n["entries"], n["expired"], n["hits"],
                          fmt.human_bytes(n["bytes"])] for n in namespaces], "lrrrr"))
    return 0


# -- ls / show -------------------------------------------------------------------------------

_SORTS = {
    "newest": "e.created_at DESC, e.id DESC",
    "oldest": "e.created_at ASC, e.id ASC",
    "hits": "e.hits DESC, e.id DESC",
    "accessed": "e.accessed_at DESC, e.id DESC",
}


def cmd_ls(args: argparse.Namespace) -> int:
    now = time.time()
    where, params = ["1"], []  # type: ignore[var-annotated]
    if args.namespace is not None:
        where.append("e.namespace = ?")
        params.append(args.namespace)
    if args.expired:
        where.append("e.expires_at IS NOT NULL AND e.expires_at <= ?")
        params.append(now)
    elif args.live:
        where.append("(e.expires_at IS NULL OR e.expires_at > ?)")
        params.append(now)
    cond = " AND ".join(where)
    limit = -1 if args.limit == 0 else args.limit
    with open_cache(args.path) as cache:
        total = cache._store.query(f"SELECT count(*) FROM entries e WHERE {cond}", params)[0][0]
        rows = cache._store.query(
            "SELECT e.id, e.namespace, p.scope, e.prompt, e.hits, e.tokens, e.size, "
            "e.created_at, e.accessed_at, e.expires_at, e.metadata "
            "FROM entries e JOIN partitions p ON p.id = e.partition_id "
            f"WHERE {cond} ORDER BY {_SORTS[args.sort]} LIMIT ?", (*params, limit))
    items = [{
        "id": r[0], "namespace": r[1], "scope": r[2], "prompt": r[3], "hits": r[4],
        "tokens": r[5], "size": r[6], "created_at": r[7], "accessed_at": r[8],
        "expires_at": r[9], "expired": r[9] is not None and r[9] <= now,
        "model": _model_of(r[10]),
    } for r in rows]
    if args.json:
        fmt.print_json({"total": total, "entries": items})
        return 0
    if not items:
        print("no entries" + ("" if total else " in this cache"))
        return 0
    width = max(20, fmt_width() - 75)
    print(fmt.table(
        ["id", "namespace", "model", "hits", "age", "expires", "size", "prompt"],
        [[i["id"], fmt.one_line(i["namespace"], 16), fmt.one_line(i["model"], 14), i["hits"],
          fmt.human_duration(now - i["created_at"]), fmt.expiry_text(i["expires_at"], now),
          fmt.human_bytes(i["size"]), fmt.one_line(i["prompt"], width)] for i in items],
        "rllrrlrl"))
    if total > len(items):
        print(f"({len(items)} of {total} entries shown; --limit 0 shows all)")
    return 0


def fmt_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return 120


def _entry_record(cache: Any, entry_id: int) -> dict[str, Any]:
    from semcache.store.codecs import decode_metadata, decode_response

    rows = cache._store.query(
        "SELECT e.id, e.key_hash, e.namespace, p.scope, e.prompt, e.response, e.metadata, "
        "e.tokens, e.size, e.created_at, e.accessed_at, e.expires_at, e.ttl, e.hits, "
        "length(e.vector), e.code IS NOT NULL "
        "FROM entries e JOIN partitions p ON p.id = e.partition_id WHERE e.id = ?",
        (entry_id,))
    if not rows:
        raise CLIError(f"no entry with id {entry_id} in {cache.path!r}")
    (eid, key, ns, scope, prompt, resp, meta, tokens, size, created, accessed, expires, ttl,
     hits, vlen, has_code) = rows[0]
    return {
        "id": eid, "key_hash": bytes(key).hex(), "namespace": ns, "scope": scope,
        "prompt": prompt, "response": decode_response(resp), "metadata": decode_metadata(meta),
        "tokens": tokens, "size": size, "created_at": created, "accessed_at": accessed,
        "expires_at": expires, "ttl": ttl, "hits": hits,
        "vector_dim": None if vlen is None else vlen // 4, "has_code": bool(has_code),
    }


def cmd_show(args: argparse.Namespace) -> int:
    now = time.time()
    with open_cache(args.path) as cache:
        rec = _entry_record(cache, args.id)
    if args.json:
        fmt.print_json(rec)
        return 0
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
    body = json.dumps(rec["response"], ensure_ascii=False, indent=2)
    print("  " + body.replace("\n", "\n  "))
    return 0


# -- get ---------------------------------------------------------------------------------

def _lookup_any_scope(cache: Any, text: str, namespace: str,
                      exact_only: bool) -> tuple[Any, str] | None:
    """Look ``text`` up like ``cache.get``; then, for entries stored by the LLM
    integrations (one scope per model + parameters + conversation prefix), by prompt text
    in every scope of the namespace, then semantically in every scope."""
    hit = cache.get(text, namespace=namespace, exact_only=exact_only)
    if hit is not None:
        return hit, ""
    now = time.time()
    rows = cache._store.query(
        "SELECT e.id, p.scope FROM entries e JOIN partitions p ON p.id = e.partition_id "
        "WHERE e.namespace = ? AND e.prompt = ? AND (e.expires_at IS NULL OR e.expires_at > ?) "
        "ORDER BY e.id DESC LIMIT 1", (namespace, text, now))
    if rows:
        row = cache._store.get_by_id(rows[0][0])
        if row is not None:
            return cache._hit_from_row(row, "exact", 1.0, now), rows[0][1]
    if exact_only or not cache._semantic_enabled():
        return None
    scopes = cache._store.query(
        "SELECT id, scope FROM partitions WHERE namespace = ? AND scope != ''", (namespace,))
    if not scopes:
        return None
    vectors = cache._embed([text])
    if vectors is None:
        return None
    best: tuple[Any, float, str] | None = None
    for pid, scope in scopes:
        found = cache._rescore(vectors[0], pid, now)
        if found is not None and (best is None or found[1] > best[1]):
            best = (found[0], found[1], scope)
    if best is None:
        return None
    return cache._hit_from_row(best[0], "semantic", best[1], now), best[2]


def cmd_get(args: argparse.Namespace) -> int:
    with open_cache(args.path) as cache:
        namespace = args.namespace if args.namespace is not None else cache.namespace
        threshold = cache.similarity_threshold
        found = _lookup_any_scope(cache, args.text, namespace, args.exact_only)
    if found is None:
        if args.json:
            fmt.print_json({"hit": False, "namespace": namespace, "threshold": threshold})
        else:
            print(f"MISS (namespace {namespace!r}, similarity threshold {threshold:g})")
        return 0
    hit, scope = found
    out = {
        "hit": True, "kind": hit.kind, "similarity": round(float(hit.similarity), 6),
        "entry_id": hit.entry_id, "namespace": hit.namespace, "scope": scope,
        "prompt": hit.prompt, "response": hit.response, "metadata": hit.metadata,
        "threshold": threshold,
    }
    if args.json:
        fmt.print_json(out)
        return 0
    print(f"HIT {hit.kind}  similarity={hit.similarity:.3f}  entry {hit.entry_id}  "
          f"namespace {hit.namespace!r}" + (f"  scope {scope[:12]}" if scope else ""))
    print(f"prompt: {hit.prompt if hit.prompt is not None else '(not stored)'}")
    print("answer:")
    print("  " + answer_text(hit.response).replace("\n", "\n  "))
    return 0


# -- purge / vacuum ----------------------------------------------------------------------------

def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        reply = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return reply.strip().lower() in ("y", "yes")


def cmd_purge(args: argparse.Namespace) -> int:
    if args.all and (args.expired or args.namespace is not None or args.older_than is not None):
        raise CLIError("--all deletes every entry; it cannot be combined with other filters")
    if not (args.all or args.expired or args.namespace is not None
            or args.older_than is not None):
        raise CLIError("say what to purge: --expired, --namespace NS, --older-than AGE or --all")
    older = None if args.older_than is None else fmt.parse_duration(args.older_than)
    with open_cache(args.path, write=not args.dry_run) as cache:
        now = cache._clock()
        where: list[str] = []
        params: list[Any] = []
        if args.expired:
            where.append("expires_at IS NOT NULL AND expires_at <= ?")
            params.append(now)
        if args.namespace is not None:
            where.append("namespace = ?")
            params.append(args.namespace)
        if older is not None:
            where.append("created_at < ?")
            params.append(now - older)
        cond = " AND ".join(where) if where else "1"
        matching = cache._store.query(f"SELECT count(*) FROM entries WHERE {cond}", params)[0][0]
        if args.dry_run:
            deleted = 0
        elif args.all:
            if matching and not args.yes and not _confirm(
                    f"Delete all {matching} entries from {args.path}?"):
                if not sys.stdin.isatty():
                    raise CLIError("refusing to delete every entry without confirmation "
                                   "(not a terminal): pass --yes")
                print("nothing deleted", file=sys.stderr)
                return 1
            deleted = cache.clear()
        elif where == ["expires_at IS NOT NULL AND expires_at <= ?"]:
            deleted = cache.purge_expired()
        else:
            with cache._lock, cache._write() as txn:
                deleted = len(txn.delete_where(cond, params))
                if args.expired:
                    cache._count(expirations=deleted)
    if args.json:
        fmt.print_json({"deleted": deleted, "matching": matching, "dry_run": args.dry_run})
    elif args.dry_run:
        print(f"{matching} entries would be deleted (dry run)")
    else:
        print(f"deleted {deleted} entries")
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    def size() -> int:
        return sum(os.path.getsize(p) for p in (args.path, args.path + "-wal")
                   if os.path.exists(p))

    with open_cache(args.path, write=True) as cache:
        cache.flush()
        before = size()
        store = cache._store
        assert store.lock is not None
        started = time.monotonic()
        with store.lock.hold(), store._mutex:
            store.conn.execute("VACUUM")
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        seconds = time.monotonic() - started
        after = size()
    if args.json:
        fmt.print_json({"bytes_before": before, "bytes_after": after,
                        "seconds": round(seconds, 3)})
    else:
        print(f"vacuumed {args.path}: {fmt.human_bytes(before)} -> {fmt.human_bytes(after)} "
              f"in {seconds:.2f}s")
    return 0


# -- verify --------------------------------------------------------------------------------

def basic_verify(path: str) -> dict[str, Any]:
    """Integrity checks on a cache file, read-only (used when semcache.verify is absent)."""
    problems: list[str] = []
    with open_cache(path) as cache:
        q = cache._store.query
        integrity = [r[0] for r in q("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems += [f"integrity_check: {line}" for line in integrity[:20]]
        entries = q("SELECT count(*) FROM entries")[0][0]
        counted = q("SELECT value FROM counters WHERE name = 'entries'")
        if counted and counted[0][0] != entries:
            problems.append(f"counters.entries is {counted[0][0]}, entries has {entries} rows")
        coded = q("SELECT count(*) FROM entries WHERE code IS NOT NULL")[0][0]
        codes = q("SELECT count(*) FROM entry_codes")[0][0]
        if coded != codes:
            problems.append(f"{coded} entries have codes but entry_codes has {codes} rows")
        dim = cache.dim
        if dim is not None:
            bad = q("SELECT count(*) FROM entries WHERE vector IS NOT NULL AND length(vector) != ?",
                    (dim * 4,))[0][0]
            if bad:
                problems.append(f"{bad} vectors do not have dimension {dim}")
        orphans = q("SELECT count(*) FROM entries e LEFT JOIN partitions p "
                    "ON p.id = e.partition_id WHERE p.id IS NULL")[0][0]
        if orphans:
            problems.append(f"{orphans} entries point to a missing partition")
    return {"ok": not problems, "path": path, "entries": entries, "problems": problems}


def cmd_verify(args: argparse.Namespace) -> int:
    import importlib
    import importlib.util

    check_cache_path(args.path)
    # The full checker (semcache/verify.py) when this semcache has it; else basic checks.
    verify = basic_verify
    if importlib.util.find_spec("semcache.verify") is not None:
        verify = importlib.import_module("semcache.verify").verify
    result = verify(args.path)
    ok = bool(result.get("ok", not result.get("problems")))
    if args.json:
        fmt.print_json(result)
    else:
        print(f"{args.path}: {'OK' if ok else 'PROBLEMS FOUND'}")
        for key, value in result.items():
            if key in ("ok", "path"):
                continue
            if isinstance(value, list):
                for item in value:
                    print(f"  {key}: {item}")
            else:
                print(f"  {key}: {value}")
    return 0 if ok else 1


# -- export / import --------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from semcache.transfer import export_jsonl

    with open_cache(args.path) as cache:
        if args.out == "-":
            n = export_jsonl(cache, sys.stdout)
            sys.stdout.flush()
        else:
            tmp = args.out + ".part"
            try:
                with open(tmp, "w", encoding="utf-8", newline="\n") as out:
                    n = export_jsonl(cache, out)
                os.replace(tmp, args.out)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
    summary = {"exported": n, "path": args.path, "out": args.out}
    if args.out == "-":
        print(f"exported {n} entries", file=sys.stderr)
    elif args.json:
        fmt.print_json(summary)
    else:
        print(f"exported {n} entries from {args.path} to {args.out}")
    return 0


_PROGRESS_MIN_BYTES = 1 << 20


def cmd_import(args: argparse.Namespace) -> int:
    from semcache.cache import Cache
    from semcache.transfer import (
        BadLine,
        import_jsonl,
        open_options_for,
        read_header,
    )

    lines: list[str] | None = None
    if args.input == "-":
        lines = sys.stdin.readlines()  # read once: stdin cannot be read twice
        first = lines[0] if lines else ""
    elif not os.path.isfile(args.input):
        raise CLIError(f"no input file at {args.input!r}")
    else:
        with open(args.input, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    created = not os.path.exists(args.path)
    if created:
        opts = open_options_for(read_header(first))
        if args.embedder is not None:
            opts.pop("hash_only", None)
            opts["embedder"] = args.embedder
        try:
            cache = Cache(args.path, **opts)
        except BaseException:
            _remove_new_file(args.path)  # e.g. an embedder this semcache cannot build
            raise
    else:
        if args.embedder is not None:
            raise CLIError("--embedder only applies when import creates a new cache file")
        cache = open_cache(args.path, write=True)

    progress = None
    size = os.path.getsize(args.input) if args.input != "-" else 0
    if not args.quiet and size >= _PROGRESS_MIN_BYTES:
        bar = fmt.Progress(size, "importing")
        bar.update(0, "0 entries")

        def progress(done: int, total: int, imported: int) -> None:
            bar.update(done, f"{imported} entries")

    def report_bad(bad: BadLine) -> None:
        if not args.strict and not args.json:
            print(f"{args.input}:{bad.line}: skipped: {bad.error}", file=sys.stderr)

    try:
        with cache:
            report = import_jsonl(cache, args.input, strict=args.strict,
                                  batch_size=args.batch_size, progress=progress,
                                  on_bad_line=report_bad, lines=lines)
    except BaseException:
        if created:
            _remove_new_file(args.path)
        raise
    if progress is not None:
        bar.finish(f"{report.imported} entries")
    report.created = created
    if args.json:
        fmt.print_json(report.as_dict())
    else:
        msg = f"imported {report.imported} entries into {args.path}"
        if report.bad_count:
            msg += f"; skipped {report.bad_count} bad line(s) (see above)"
        print(msg + f" in {report.seconds:.2f}s")
    return 0


def _remove_new_file(path: str) -> None:
    """Remove a cache file this command created and failed to fill."""
    for suffix in ("", "-wal", "-shm", "-codes", ".lock"):
        try:
            os.remove(path + suffix)
        except OSError:
            pass


# -- bench / demo ----------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    from semcache.cli_bench import print_bench, run_bench

    result = run_bench(entries=args.entries, queries=args.queries, embedder=args.embedder)
    if args.json:
        fmt.print_json(result)
    else:
        print_bench(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from semcache.demo import run_demo

    result = run_demo(directory=args.dir, latency=args.latency,
                      out=None if args.json else sys.stdout)
    if args.json:
        fmt.print_json(result)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from semcache.integrations.proxy.server import run_from_args

    return run_from_args(args)


# -- argument parsing ----------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"latency must be between 0 and 10 seconds, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit status 2), the usage left to ``--help``."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON on stdout (for scripts)")
    parser = _Parser(
        prog=PROG, description="Inspect and maintain semcache files; run the demo.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage. See docs/cli.md.")
    parser.add_argument("--json", action="store_true", default=False,
                        help="print JSON on stdout (for scripts)")
    from semcache import __version__

    parser.add_argument("--version", action="version", version=f"semcache {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    p = add("stats", "counters, sizes and settings of a cache file")
    p.add_argument("path", help="cache file")
    p.set_defaults(func=cmd_stats)

    p = add("ls", "list entries")
    p.add_argument("path", help="cache file")
    p.add_argument("--namespace", "-n", help="only this namespace")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--expired", action="store_true", help="only expired entries")
    state.add_argument("--live", action="store_true", help="only unexpired entries")
    p.add_argument("--limit", type=_positive_int, default=20,
                   help="at most this many (default 20; 0 = all)")
    p.add_argument("--sort", choices=sorted(_SORTS), default="newest",
                   help="order (default newest first; hits = most-hit first)")
    p.set_defaults(func=cmd_ls)

    p = add("show", "one entry in full, with its response")
    p.add_argument("path", help="cache file")
    p.add_argument("id", type=int, help="entry id (from ls)")
    p.set_defaults(func=cmd_show)

    p = add("get", "look a text up: exact, then semantic (shows the similarity)")
    p.add_argument("path", help="cache file")
    p.add_argument("text", help="prompt or question")
    p.add_argument("--namespace", "-n", help="namespace (default: the file's)")
    p.add_argument("--exact-only", action="store_true", help="skip the semantic tier")
    p.set_defaults(func=cmd_get)

    p = add("purge", "delete entries: expired, by namespace, by age, or all")
    p.add_argument("path", help="cache file")
    p.add_argument("--expired", action="store_true", help="entries past their expiry")
    p.add_argument("--namespace", "-n", help="entries of this namespace")
    p.add_argument("--older-than", metavar="AGE",
                   help="entries created more than AGE ago (seconds, or 90m, 12h, 7d, 2w)")
    p.add_argument("--all", action="store_true", help="every entry (asks first)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.set_defaults(func=cmd_purge)

    p = add("vacuum", "compact the file (VACUUM + WAL checkpoint)")
    p.add_argument("path", help="cache file")
    p.set_defaults(func=cmd_vacuum)

    p = add("verify", "check the file's integrity (exit 1 if damaged)")
    p.add_argument("path", help="cache file")
    p.set_defaults(func=cmd_verify)

    p = add("export", "write every entry to a JSON Lines file")
    p.add_argument("path", help="cache file")
    p.add_argument("out", help="output .jsonl file ('-' for stdout)")
    p.set_defaults(func=cmd_export)

    p = add("import", "read entries from a JSON Lines file (creates the cache if missing)")
    p.add_argument("path", help="cache file (created with the export's embedder if missing)")
    p.add_argument("input", help="input .jsonl file ('-' for stdin)")
    p.add_argument("--strict", action="store_true",
                   help="refuse the whole file if any line is bad (default: skip bad lines)")
    p.add_argument("--batch-size", type=_positive_int, default=500,
                   help="entries per transaction (default 500)")
    p.add_argument("--embedder", help="embedder of a new cache when the input has no header")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    p = add("bench", "quick benchmark of lookups on a temporary file")
    p.add_argument("--entries", type=_positive_int, default=2000, help="entries (default 2000)")
    p.add_argument("--queries", type=_positive_int, default=500,
                   help="lookups per kind (default 500)")
    p.add_argument("--embedder", default="hashing",
                   help="embedder (default hashing: no model; minilm includes embedding time)")
    p.set_defaults(func=cmd_bench)

    p = add("demo", "scripted chat session through semcache.wrap against a local stub server")
    p.add_argument("--dir", default="semcache-demo",
                   help="directory of the demo cache file (default ./semcache-demo)")
    p.add_argument("--latency", type=_latency, default=0.4,
                   help="simulated model latency in seconds (default 0.4)")
    p.set_defaults(func=cmd_demo)

    from semcache.integrations.proxy.server import add_serve_arguments

    p = add("serve", "OpenAI-compatible caching proxy (extra [serve]); see docs/integrations.md")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semcache`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", 1) == 0:
        parser.error("--batch-size must be >= 1")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `semcache ls ... | head`: the reader went away; not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit flush
        except OSError:
            pass
        return 0
    except (SemcacheError, OSError, InvalidInputError) as exc:
        if os.environ.get("SEMCACHE_DEBUG"):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
