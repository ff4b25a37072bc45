"""Checks on how the words of a prompt are related, not on which words it has: the same
things moving the other way ("from my iPhone to my PC" / "from my PC to my iPhone",
"latex over oil paint" / "oil over latex paint"), and a position added to a ranking
("the second highest" / "the highest").

Both read the word sequence of :func:`semcache.guard.contrast.read` and work for any words
(multi-word names included: "my windows computer"), which is why they generalize where
word lists do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from semcache.guard import contrast_words as cw
from semcache.guard.contrast import _BREAK, Pair, base, content, same_thing
from semcache.guard.text import stem

#: Markers whose left side is where something comes from and right side where it goes.
TOWARD: frozenset[str] = frozenset({"to", "into", "onto", "->", "toward", "towards"})
#: Markers whose right side is where something comes from ("from my iPhone", "off the
#: shelf", "out of the box").
AWAY: frozenset[str] = frozenset({"from", "off"})
#: Markers that order the two sides without a movement: "X over Y", "X than Y",
#: "X instead of Y", "X before Y", "X for Y" (swap X for Y). Compared only with the same
#: marker in the other prompt.
ORDERING: frozenset[str] = frozenset(
    {"over", "than", "instead", "before", "after", "above", "below", "under", "vs", "versus",
     "per", "with"})
#: Content words taken on each side of a marker (names run to two or three words).
WINDOW = 3


@dataclass(frozen=True, slots=True)
class Flow:
    """Where the content words of a prompt stand around its relation markers."""

    sources: frozenset[str]
    targets: frozenset[str]
    ordered: frozenset[tuple[str, str, str]]   # (marker, left word, right word)


def _side(raw: tuple[str, ...], start: int, step: int) -> list[str]:
    """Up to WINDOW content words from ``start`` going ``step``, stopping at punctuation or
    another marker (numbers count: "20% of 50")."""
    out: list[str] = []
    i = start
    while 0 <= i < len(raw) and len(out) < WINDOW:
        w = raw[i]
        if w == _BREAK or w in TOWARD or w in AWAY or w in ORDERING:
            break
        if (content(w) and w not in cw.FILLER) or any(ch.isdigit() for ch in w):
            out.append(base(w))
        i += step
    return out


@lru_cache(maxsize=8192)
def flow(raw: tuple[str, ...]) -> Flow:
    """The flow of a prompt from its reading's tokens (``read(text).raw``)."""
    sources: set[str] = set()
    targets: set[str] = set()
    ordered: set[tuple[str, str, str]] = set()
    for i, w in enumerate(raw):
        if w in TOWARD:
            left, right = _side(raw, i - 1, -1), _side(raw, i + 1, 1)
            if left and right:
                sources.update(left)
                targets.update(right)
        elif w in AWAY:
            right = _side(raw, i + 1, 1)
            if w == "off" and i and raw[i - 1] in ("pay", "paying", "paid", "pays", "turn",
                                                    "switch", "log", "sign", "show"):
                continue  # "pay off", "turn off": a verb's particle, not a source
            sources.update(right)
        elif w in ORDERING:
            left, right = _side(raw, i - 1, -1), _side(raw, i + 1, 1)
            ordered.update((w, x, y) for x in left for y in right if x != y)
    return Flow(frozenset(sources), frozenset(targets), frozenset(ordered))


def _has(words: frozenset[str], word: str) -> bool:
    return any(same_thing(word, w) for w in words)


def _moved(a: Flow, b: Flow) -> list[str]:
    """Words that are a source in ``a`` and a target in ``b`` only."""
    return sorted(x for x in a.sources
                  if _has(b.targets, x) and not _has(a.targets, x) and not _has(b.sources, x))


def check_flow(p: Pair) -> str | None:
    """The same things move the other way: a word that is where something comes from in one
    prompt is where it goes in the other, and another one the reverse ("iPhone photos to
    my PC" / "photos from my PC onto my iPhone"); or two words exchange their sides around
    the same ordering marker ("latex over oil" / "oil over latex")."""
    fa, fb = flow(p.a.raw), flow(p.b.raw)
    there, back = _moved(fa, fb), _moved(fb, fa)
    if there and back and set(there) != set(back):
        return f"{there[0]} -> {back[0]} vs {back[0]} -> {there[0]}"
    for marker, x, y in sorted(fa.ordered):
        if (marker, y, x) in fb.ordered and (marker, x, y) not in fb.ordered \
                and (marker, y, x) not in fa.ordered:
            return f"{x} {marker} {y} vs {y} {marker} {x}"
    return None


def check_rank(p: Pair) -> str | None:
    """A position in a ranking in one prompt only: "second highest" / "highest", "2nd most"
    / "most" (an ordinal on one side, none on the other, and the ranking word on both)."""
    oa, ob = p.a.ordinals, p.b.ordinals
    if bool(oa) == bool(ob) or (oa | ob) <= {"1"}:
        return None
    ranked = _rankings(p.a.raw) & _rankings(p.b.raw)
    if ranked:
        return f"{', '.join(sorted(oa)) or 'none'} vs {', '.join(sorted(ob)) or 'none'} {min(ranked)}"
    return None


def _rankings(raw: tuple[str, ...]) -> set[str]:
    """Superlatives and "most"/"least": what an ordinal ranks."""
    out = set()
    for w in raw:
        if w in ("most", "least", "top", "bottom"):
            out.add(w)
        elif len(w) > 5 and w.endswith("est") and w not in cw.NOT_SUPERLATIVE:
            out.add(base(w))
    return out


_WH = frozenset({"what", "which", "who", "whom"})
_DO = frozenset({"do", "does", "did"})


def _wh_roles(raw: tuple[str, ...]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(verb, thing) pairs of "what <verb>s <thing>" (the thing undergoes it) and of "what
    does <thing> <verb>" (the thing does it)."""
    undergoes: set[tuple[str, str]] = set()
    does: set[tuple[str, str]] = set()
    for i, w in enumerate(raw[:-2]):
        if w not in _WH:
            continue
        nxt = raw[i + 1]
        rest = [t for t in raw[i + 2:i + 6] if content(t) and t not in cw.FILLER]
        if nxt in _DO and len(rest) >= 2:
            does.add((stem(base(rest[-1])), stem(base(rest[0]))))
        elif content(nxt) and nxt not in cw.FILLER and rest:
            undergoes.add((stem(base(nxt)), stem(base(rest[0]))))
    return undergoes, does


def check_roles(p: Pair) -> str | None:
    """The thing asked about does the action in one question and undergoes it in the other:
    "What causes a migraine?" / "What does a migraine cause?", "What eats aphids?" / "What
    do aphids eat?"."""
    ua, da = _wh_roles(p.a.raw)
    ub, db = _wh_roles(p.b.raw)
    for verb, thing in sorted((ua & db) | (da & ub)):
        if verb != thing:
            return f"what {verb}s {thing} vs what does {thing} {verb}"
    return None


#: The checks of this module, in the order they run (after the contrast checks').
FLOW_CHECKS = (("flow", check_flow), ("rank", check_rank), ("roles", check_roles))

__all__ = ["FLOW_CHECKS", "Flow", "check_flow", "check_rank", "check_roles", "flow"]
