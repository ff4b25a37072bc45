"""``semcache purge | vacuum | export | import | reembed``: commands that change or copy a
cache.

They call the library (:meth:`semcache.Cache.purge`, :meth:`~semcache.Cache.vacuum`,
:mod:`semcache.transfer`), so the CLI does exactly what a program would.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import semcache
from semcache.cli import output as fmt
from semcache.cli.common import CLIError, UsageError, open_cache
from semcache.cli.progress import progress_bar
from semcache.errors import CacheNotFoundError, InvalidInputError


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
        raise UsageError("--all deletes every entry; it cannot be combined with other filters")
    if not (args.all or args.expired or args.namespace is not None
            or args.older_than is not None):
        raise UsageError("say what to purge: --expired, --namespace NS, --older-than AGE or --all")
    try:
        older = None if args.older_than is None else fmt.parse_duration(args.older_than)
    except InvalidInputError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    filters: dict[str, Any] = {"namespace": args.namespace,
                               "expired": True if args.expired else None, "older_than": older}
    with open_cache(args, write=not args.dry_run) as cache:
        matching = cache.count(**filters)
        if args.dry_run:
            deleted = 0
        elif args.all:
            if matching and not args.yes and not _confirm(
                    f"Delete all {matching} entries from {args.shown}?"):
                if not sys.stdin.isatty():
                    raise CLIError("refusing to delete every entry without confirmation "
                                   "(not a terminal): pass --yes")
                print("nothing deleted", file=sys.stderr)
                return 1
            deleted = cache.purge(everything=True)
        else:
            deleted = cache.purge(**filters)
    if args.json:
        fmt.print_json({"deleted": deleted, "matching": matching, "dry_run": args.dry_run})
    elif args.dry_run:
        print(f"{matching} entries would be deleted (dry run)")
    else:
        print(f"deleted {deleted} entries")
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    with open_cache(args, write=True) as cache, progress_bar(
            None, "vacuum", quiet=args.quiet, unit="steps") as bar:
        cache.flush()
        before = cache.stats()["file_bytes"]
        started = time.monotonic()

        def step(name: str, number: int, steps: int) -> None:
            bar.total = steps or None
            bar.set_description_str(f"vacuum: {name}", refresh=False)
            bar.update(number - bar.n)
            bar.refresh()  # a handful of steps, each drawn as it starts

        done = cache.vacuum(progress=step)
        seconds = time.monotonic() - started
        after = cache.stats()["file_bytes"]
    if args.json:
        fmt.print_json({"bytes_before": before, "bytes_after": after,
                        "seconds": round(seconds, 3), **done})
    else:
        repaired = done.get("orphan_codes", 0) + done.get("missing_codes", 0)
        print(f"vacuumed {args.shown}: {fmt.human_bytes(before)} -> {fmt.human_bytes(after)} "
              f"in {seconds:.2f}s; {done.get('expired', 0)} expired entries purged"
              + (f", {repaired} code index rows repaired" if repaired else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from semcache.transfer import export_jsonl

    with open_cache(args) as cache, progress_bar(cache.count(), "exporting",
                                                  quiet=args.quiet) as bar:
        if args.out == "-":
            n = export_jsonl(cache, sys.stdout, progress=bar.update)
            sys.stdout.flush()
        else:
            tmp = args.out + ".part"
            try:
                out = open(tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            except OSError as exc:  # name the file asked for, not the temporary one
                raise CLIError(f"cannot write {args.out!r}: {exc.strerror}") from None
            try:
                with out:
                    n = export_jsonl(cache, out, progress=bar.update)
                os.replace(tmp, args.out)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
    if args.out == "-":
        print(f"exported {n} entries", file=sys.stderr)
    elif args.json:
        fmt.print_json({"exported": n, "path": args.shown, "out": args.out})
    else:
        print(f"exported {n} entries from {args.shown} to {args.out}")
    return 0


def _read_input(path: str) -> tuple[list[str] | None, str]:
    """(all lines when reading stdin, else None; the first line)."""
    if path == "-":
        lines = sys.stdin.readlines()  # read once: stdin cannot be read twice
        return lines, lines[0] if lines else ""
    if not os.path.isfile(path):
        raise CLIError(f"no input file at {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            return None, f.readline()
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path!r} is not UTF-8 text, so not a semcache export ({exc})") from None


def _is_record(line: str) -> bool:
    import json

    from semcache.transfer import parse_record

    try:
        parse_record(json.loads(line))
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def _target(args: argparse.Namespace, first: str) -> semcache.Cache:
    """The cache to import into (``cache.created``: this command creates it)."""
    from semcache.transfer import open_options_for, read_header

    try:
        cache = open_cache(args, write=True)
    except CacheNotFoundError:
        opts = open_options_for(read_header(first))
        if args.embedder is not None:
            opts.pop("hash_only", None)
            opts["embedder"] = args.embedder
        cache = semcache.open(args.path, **opts)  # a failed open leaves no cache behind
        args.shown = cache.location
        return cache
    if args.embedder is not None:
        cache.close()
        raise UsageError("--embedder only applies when import creates a new cache")
    return cache


def cmd_import(args: argparse.Namespace) -> int:
    from semcache.transfer import BadLine, import_jsonl, read_header

    lines, first = _read_input(args.input)
    if read_header(first) is None and not _is_record(first):
        raise CLIError(f"{args.input!r} is not a semcache export (its first line is neither "
                       "an export header nor an entry)")
    cache = _target(args, first)
    created = cache.created
    size = sum(map(len, lines)) if lines is not None else os.path.getsize(args.input)
    bar = progress_bar(size, "importing", quiet=args.quiet, unit="B", unit_scale=True)

    def progress(done: int, total: int, imported: int) -> None:
        bar.update(done - bar.n)
        bar.set_postfix_str(f"{imported} entries", refresh=False)

    def report_bad(bad: BadLine) -> None:
        if not args.strict and not args.json:
            print(f"{args.input}:{bad.line}: skipped: {bad.error}", file=sys.stderr)

    try:
        report = import_jsonl(cache, args.input, strict=args.strict,
                              batch_size=args.batch_size, progress=progress,
                              on_bad_line=report_bad, lines=lines,
                              apply_settings=created)
    except BaseException:
        bar.close()
        if created:
            cache.drop()  # a cache this command made and could not fill
        else:
            cache.close()
        raise
    bar.close()
    cache.close()
    report.created = created
    if args.json:
        fmt.print_json(report.as_dict())
    else:
        msg = f"imported {report.imported} entries into {args.shown}"
        if report.bad_count:
            msg += f"; skipped {report.bad_count} bad line(s) (see above)"
        print(msg + f" in {report.seconds:.2f}s")
        for kept in report.settings_kept:
            print(f"not applied (the existing cache keeps its own): {kept}", file=sys.stderr)
        if report.ignored_keys:
            print("ignored (written by a newer semcache): "
                  + ", ".join(report.ignored_keys), file=sys.stderr)
    return 0


def cmd_reembed(args: argparse.Namespace) -> int:
    from semcache.reembed import describe, reembed

    with progress_bar(None, "re-embedding", quiet=args.quiet) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = reembed(args.source, args.target, args.embedder,
                         batch_size=args.batch_size, progress=progress)
    if args.json:
        fmt.print_json(report.as_dict())
    else:
        print(describe(report))
    return 0


__all__ = ["cmd_export", "cmd_import", "cmd_purge", "cmd_reembed", "cmd_vacuum"]
