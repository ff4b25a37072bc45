"""The ``semcache`` command line (also ``python -m semcache``).

Look inside a cache file without writing Python::

    semcache stats llm.db            semcache ls llm.db --sort hits --limit 10
    semcache show llm.db 42          semcache get llm.db "What is the capital of France?"
    semcache purge llm.db --expired  semcache purge llm.db --older-than 7d
    semcache vacuum llm.db           semcache verify llm.db
    semcache export llm.db out.jsonl semcache import new.db out.jsonl
    semcache reembed old.db new.db --embedder minilm
    semcache calibrate llm.db --namespace support --apply
    semcache ui llm.db               (the dashboard: http://127.0.0.1:8089/)
    semcache bench                   semcache demo

Every command prints a human-readable view by default and JSON with ``--json``.
Exit codes: 0 ok, 1 error (one line on stderr, no traceback), 2 usage error.

Inspection commands (stats, ls, show, get, verify, export) open the file read-only: they
never write to it (no settings, no hit counts) and only ``get`` loads the embedder. A
missing file is an error; only ``import`` creates one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from semcache.cli import output as fmt
from semcache.cli.common import CLIError, UsageError
from semcache.cli.maintain import cmd_export, cmd_import, cmd_purge, cmd_reembed, cmd_vacuum
from semcache.cli.views import cmd_get, cmd_ls, cmd_show, cmd_stats, cmd_verify
from semcache.errors import SemcacheError

PROG = "semcache"
#: ``semcache ls --sort`` choices.
SORTS = ("newest", "oldest", "hits", "accessed")


# -- bench / demo ----------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    from semcache.cli.bench import print_bench, run_bench

    result = run_bench(entries=args.entries, queries=args.queries, embedder=args.embedder)
    if args.json:
        fmt.print_json(result)
    else:
        print_bench(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        import openai  # noqa: F401 - the demo drives the real SDK

        from semcache.demo import run_demo
    except ImportError as exc:
        raise CLIError(f"the demo needs the openai package (pip install "
                       f"'semcache-sqlite[openai]'): {exc}") from None
    result = run_demo(directory=args.dir, latency=args.latency,
                      out=None if args.json else sys.stdout)
    if args.json:
        fmt.print_json(result)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from semcache.dashboard.server import run_ui

    return run_ui(args)


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

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON on stdout (for scripts)")
    parser = _Parser(
        prog=PROG,
        description="Inspect and maintain semcache caches (files or postgresql:// URLs); "
        "run the demo, the proxy, a benchmark.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage. See docs/cli.md.")
    parser.add_argument("--json", action="store_true", default=False,
                        help="print JSON on stdout (for scripts)")
    from semcache import __version__

    parser.add_argument("--version", action="version", version=f"semcache {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    p = add("stats", "counters, sizes and settings of a cache")
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.set_defaults(func=cmd_stats)

    p = add("ls", "list entries")
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.add_argument("--namespace", "-n", help="only this namespace")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--expired", action="store_true", help="only expired entries")
    state.add_argument("--live", action="store_true", help="only unexpired entries")
    p.add_argument("--limit", type=_positive_int, default=20,
                   help="at most this many (default 20; 0 = all)")
    p.add_argument("--sort", choices=SORTS, default="newest",
                   help="order (default newest first; hits = most-hit first)")
    p.set_defaults(func=cmd_ls)

    p = add("show", "one entry in full, with its response")
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.add_argument("id", type=int, help="entry id (from ls)")
    p.set_defaults(func=cmd_show)

    p = add("get", "look a text up: exact, then semantic (shows the similarity)")
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.add_argument("text", help="prompt or question")
    p.add_argument("--namespace", "-n", help="namespace (default: the file's)")
    p.add_argument("--exact-only", action="store_true", help="skip the semantic tier")
    p.set_defaults(func=cmd_get)

    p = add("purge", "delete entries: expired, by namespace, by age, or all")
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.add_argument("--expired", action="store_true", help="entries past their expiry")
    p.add_argument("--namespace", "-n", help="entries of this namespace")
    p.add_argument("--older-than", metavar="AGE",
                   help="entries created more than AGE ago (seconds, or 90m, 12h, 7d, 2w)")
    p.add_argument("--all", action="store_true", help="every entry (asks first)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.set_defaults(func=cmd_purge)

    p = add("vacuum", "purge expired entries, repair the code index, compact the file")
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_vacuum)

    p = add("verify", "check the cache's integrity (exit 1 if damaged)")
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.set_defaults(func=cmd_verify)

    p = add("export", "write every entry to a JSON Lines file")
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.add_argument("out", help="output .jsonl file ('-' for stdout)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)

    p = add("import", "read entries from a JSON Lines file (creates the cache if missing)")
    p.add_argument("path", help="cache file or postgresql:// URL (created with the export's "
                   "embedder if missing)")
    p.add_argument("input", help="input .jsonl file ('-' for stdin)")
    p.add_argument("--strict", action="store_true",
                   help="refuse the whole file if any line is bad (default: skip bad lines)")
    p.add_argument("--batch-size", type=_positive_int, default=500,
                   help="entries per transaction (default 500)")
    p.add_argument("--embedder", help="embedder of a new cache when the input has no header")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    p = add("reembed", "copy a cache into a new one pinned to another embedder, embedding "
            "the stored prompts again (run it again to continue after an interruption)")
    p.add_argument("source", help="cache file or postgresql:// URL to copy (read only)")
    p.add_argument("target", help="new cache file or postgresql:// URL (or the one an "
                   "interrupted reembed started)")
    p.add_argument("--embedder", required=True, help="embedder of the new cache, e.g. minilm")
    p.add_argument("--batch-size", type=_positive_int, default=64,
                   help="entries embedded per transaction (default 64)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reembed)

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

    from semcache.dashboard.server import add_ui_arguments

    p = add("ui", "the dashboard of a cache in a browser (http://127.0.0.1:8089/)")
    add_ui_arguments(p)
    p.set_defaults(func=cmd_ui)

    from semcache.integrations.proxy.server import add_serve_arguments

    p = add("serve", "OpenAI-compatible caching proxy (extra [serve]); see docs/integrations.md")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    from semcache.cli.trust import add_parser as add_calibrate

    add_calibrate(sub, common)
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
    if hasattr(args, "id") and not 0 <= args.id < 2**62:
        parser.error(f"entry id must be an int in [0, 2**62); got {args.id}")
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
    except UsageError as exc:
        print(f"{PROG}: error: {_one_line(exc)} (see {PROG} --help)", file=sys.stderr)
        return 2
    except (SemcacheError, OSError) as exc:
        if os.environ.get("SEMCACHE_DEBUG"):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
