"""``semcache calibrate``: pick a namespace's similarity threshold for a target wrong-hit
rate, from the verdicts recorded with ``Cache.feedback`` and the verified outcomes of the
error bound's explorations (``Cache.outcomes``), or from a labelled JSONL file.

The decision rule is :func:`semcache.calibrate.calibrate`'s (a Wilson upper bound on the
wrong-hit rate); this command only gathers the observations, prints the curve and, with
``--apply``, stores the threshold for the namespace in the cache.
"""

from __future__ import annotations

import argparse
from typing import Any

from semcache.cli import output as fmt
from semcache.cli.common import CLIError, UsageError, open_cache
from semcache.cli.progress import progress_bar


def _observations(cache: Any, args: argparse.Namespace, namespace: str) -> list[Any]:
    from semcache.calibrate import Observation, observations_from_pairs, parse_pairs_jsonl

    if args.pairs is None:  # verdicts, and the outcomes of explorations (not of verdicts)
        return [Observation(v.similarity, v.correct) for v in cache.verdicts(namespace)
                if v.kind == "semantic"] + [Observation(o.similarity, o.correct) for o in
                                            cache.outcomes(namespace) if o.source == "explore"]
    if not cache.semantic:
        raise CLIError(f"{args.shown!r} has no embedder: labelled pairs cannot be scored")
    guard = None
    if cache.settings["guard"]:
        from semcache.guard import SemanticDecision

        guard = SemanticDecision()  # the cache's own decision, as its lookups make it
    pairs = parse_pairs_jsonl(args.pairs)
    with progress_bar(None, "embedding pairs", quiet=args.quiet, unit="texts") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return observations_from_pairs(pairs, cache.embedder, guard, progress)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from semcache.calibrate import calibrate, format_curve, plot_curve

    if not 0 < args.target_wrong < 1:
        raise UsageError(f"--target-wrong must be in (0, 1); got {args.target_wrong}")
    with open_cache(args, write=args.apply) as cache:
        namespace = args.namespace if args.namespace is not None else cache.namespace
        before = cache.threshold(namespace)
        result = calibrate(_observations(cache, args, namespace), args.target_wrong)
        applied = bool(args.apply and result.decided)
        if applied:
            cache.set_threshold(namespace, result.threshold)
    if args.plot:
        try:
            plot_curve(result, args.plot, title=f"{args.shown} [{namespace}]")
        except ImportError as exc:
            raise CLIError("--plot needs matplotlib (pip install "
                           f"'semcache-sqlite[plot]'): {exc}") from None
    out = {
        "namespace": namespace, "source": args.pairs or "recorded feedback",
        "observations": result.observations, "threshold_before": before,
        "threshold": result.threshold, "needed": result.needed, "applied": applied,
        "message": result.message,
        "curve": [{"threshold": p.threshold, "hits": p.hits, "wrong": p.wrong,
                   "upper_bound": round(p.upper_bound, 6)} for p in result.curve],
    }
    if args.json:
        fmt.print_json(out)
        return 0
    print(f"calibrating {args.shown} namespace {namespace!r} from {out['source']} "
          f"({result.observations} observations); threshold now {before:g}")
    if any(p.hits for p in result.curve):
        print(format_curve(result))
    else:  # a curve of zeros says nothing: only what is needed and how to collect it
        print(result.message)
    if applied:
        print(f"applied: namespace {namespace!r} now uses threshold {result.threshold:g}")
    elif result.decided:
        print("not applied (pass --apply to store it for the namespace)")
    else:
        print("nothing changed")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    help_text = "choose a namespace's similarity threshold for a target wrong-hit rate"
    p = sub.add_parser("calibrate", help=help_text, description=help_text, parents=[common])
    p.add_argument("path", help="cache file or postgresql:// URL")
    p.add_argument("--namespace", "-n", help="namespace (default: the cache's)")
    p.add_argument("--target-wrong", type=float, default=0.01,
                   help="highest acceptable wrong-hit rate (default 0.01)")
    p.add_argument("--pairs", metavar="JSONL",
                   help='labelled pairs {"query", "stored", "same"} instead of recorded feedback')
    p.add_argument("--plot", metavar="PNG", help="draw the curve to this PNG file")
    p.add_argument("--apply", action="store_true",
                   help="store the chosen threshold for the namespace")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)


__all__ = ["add_parser", "cmd_calibrate"]
