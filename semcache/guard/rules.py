"""The near-miss guard's rules: each compares two :class:`~semcache.guard.text.Analysis`
and returns ``(reason, detail)`` when the texts differ in something that changes the
answer, else ``None``.

Every rule is symmetric (swapping query and stored prompt gives the same verdict) and
only looks at differences, so a paraphrase that keeps the numbers, units, polarity,
direction and names of its original passes all of them. Details list words in sorted
order, so the explanation is the same in every process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import combinations

from semcache.guard import lexicon as lx
from semcache.guard.text import Analysis, stem

Verdict = tuple[str, str] | None

#: Role exchanges that change the answer ("from A to B", "A than B", "A in B" conversions).
DIRECTIONAL_ROLES = frozenset({"from", "to", "into", "onto", "than", "in", "for", "before",
                               "after", "toward", "towards"})
#: The pivot check (A <verb> B vs B <verb> A) only runs on prompts this short.
PIVOT_MAX_WORDS = 16

# word -> the (pair index, pole) entries it belongs to
_POLES: dict[str, list[tuple[int, int]]] = {}
for _i, (_plus, _minus) in enumerate(lx.OPPOSITES):
    for _w in _plus:
        _POLES.setdefault(_w, []).append((_i, 0))
    for _w in _minus:
        _POLES.setdefault(_w, []).append((_i, 1))


def _show(a: Analysis, words: set[str] | frozenset[str]) -> str:
    """The words as written in the text, sorted, comma-separated ("none" if empty)."""
    if not words:
        return "none"
    return ", ".join(sorted(a.display.get(w, w) for w in words))


def check_numbers(q: Analysis, s: Analysis) -> Verdict:
    """Different numbers, years, amounts or versions ("2019" vs "2020", "3.12" vs "3.8").

    A lone "one" counts as a number only against another number: "in one banana" and
    "in a banana" ask the same thing.
    """
    if q.numbers == s.numbers:
        return None
    only_q, only_s = q.numbers - s.numbers, s.numbers - q.numbers
    if (not only_s and only_q <= q.soft_numbers) or (not only_q and only_s <= s.soft_numbers):
        return None
    return "number", f"{_show(q, only_q)} vs {_show(s, only_s)}"


def check_units(q: Analysis, s: Analysis) -> Verdict:
    """Different units or currencies ("pound" vs "ounce", "euro" vs "dollar")."""
    if q.units == s.units:
        return None
    return "unit", f"{_show(q, q.units - s.units)} vs {_show(s, s.units - q.units)}"


def check_negation(q: Analysis, s: Analysis) -> Verdict:
    """One text negates where the other does not ("safe" vs "not safe", "with" vs
    "without"): the counts of negating words differ, by more than the other text's words
    that negate implicitly ("avoid", "omit", "lack"). A reply's leading "No," is not
    counted."""
    nq, ns = len(q.negations), len(s.negations)
    if nq == ns:
        return None
    if abs(nq - ns) <= (s.implicit_negations if nq > ns else q.implicit_negations):
        return None
    more_q = Counter(q.negations) - Counter(s.negations)
    more_s = Counter(s.negations) - Counter(q.negations)
    side, words = ("query", more_q) if len(q.negations) > len(s.negations) else ("stored", more_s)
    shown = ", ".join(f"'{w}'" for w in sorted(words)) or "a negation"
    return "negation", f"{shown} only in the {side} prompt"


def _poles(a: Analysis) -> set[tuple[int, int]]:
    return {pole for w in a.words if w in _POLES for pole in _POLES[w]}


def _opposite_pair(q: Analysis, s: Analysis) -> tuple[str, str] | None:
    """A lexicon pair whose one pole is only in ``q`` and the other only in ``s``."""
    pq, ps = _poles(q), _poles(s)
    for index, pole in sorted(pq - ps):
        other = (index, 1 - pole)
        if other in ps and other not in pq:
            plus, minus = lx.OPPOSITES[index]
            mine = plus if pole == 0 else minus
            theirs = minus if pole == 0 else plus
            return (_show(q, mine & set(q.words)), _show(s, theirs & set(s.words)))
    return None


def _prefixed_opposite(q: Analysis, s: Analysis) -> tuple[str, str] | None:
    """"uninstall" in one text, "install" in the other (and not vice versa)."""
    for word in q.words:
        if word in s.vocabulary or word in lx.NOT_PREFIXED:
            continue
        for prefix in lx.OPPOSING_PREFIXES:
            base = word[len(prefix):]
            if word.startswith(prefix) and len(base) > 2 and base in s.words \
                    and base not in q.vocabulary:
                return q.display.get(word, word), s.display.get(base, base)
    return None


def check_opposites(q: Analysis, s: Analysis) -> Verdict:
    """Opposite actions or qualities (enable/disable, buy/sell, uninstall/install).

    Skipped when the texts negate differently: the negation rule ran first and let that
    difference through only because the other text negates implicitly, so "not safe"
    against "unsafe" is a rewording, not an opposite.
    """
    if len(q.negations) != len(s.negations):
        return None
    found = _opposite_pair(q, s) or _prefixed_opposite(q, s)
    if found is None:
        flipped = _prefixed_opposite(s, q)
        found = (flipped[1], flipped[0]) if flipped else None
    if found is None:
        return None
    return "opposite_action", f"{found[0]} vs {found[1]}"


def check_actions(q: Analysis, s: Analysis) -> Verdict:
    """Different tasks on the same object ("increase" vs "check" my credit score)."""
    gq = {lx.ACTION_GROUPS[w] for w in q.words if w in lx.ACTION_GROUPS}
    gs = {lx.ACTION_GROUPS[w] for w in s.words if w in lx.ACTION_GROUPS}
    only_q, only_s = gq - gs, gs - gq
    if not (only_q and only_s):
        return None
    wq = {w for w in q.words if lx.ACTION_GROUPS.get(w) in only_q}
    ws = {w for w in s.words if lx.ACTION_GROUPS.get(w) in only_s}
    return "opposite_action", f"{_show(q, wq)} vs {_show(s, ws)}"


def _swapped_roles(q: Analysis, s: Analysis) -> tuple[str, str] | None:
    """Two shared words that exchange their role markers ("from A to B" / "from B to A").

    In long texts a bare word and a "to" word trading places is usually a reordered clause
    ("to access the data" / "access to the data"), so there both words need a marker.
    """
    short = len(q.words) <= PIVOT_MAX_WORDS and len(s.words) <= PIVOT_MAX_WORDS
    changed = sorted(w for w in q.roles.keys() & s.roles.keys() if q.roles[w] != s.roles[w])
    for x, y in combinations(changed, 2):
        rx, ry = q.roles[x], q.roles[y]
        if rx == s.roles[y] and ry == s.roles[x] and {rx, ry} & DIRECTIONAL_ROLES \
                and (short or (rx and ry)):
            return x, y
    return None


def _swapped_around_pivot(q: Analysis, s: Analysis) -> tuple[str, str] | None:
    """"the dog bit the man" vs "the man bit the dog": two shared words on opposite sides
    of a shared word, exchanged (short prompts only: long ones reorder clauses freely)."""
    if len(q.words) > PIVOT_MAX_WORDS or len(s.words) > PIVOT_MAX_WORDS:
        return None
    if q.passive or s.passive:
        return None
    shared = [w for w in q.roles if w in s.roles and not q.roles[w] and not s.roles[w]]
    if len(shared) < 3:
        return None
    pos_q = {w: i for i, w in enumerate(q.words) if w in q.roles}
    pos_s = {w: i for i, w in enumerate(s.words) if w in s.roles}
    for x, y in combinations(shared, 2):
        if (pos_q[x] < pos_q[y]) == (pos_s[x] < pos_s[y]):
            continue
        lo_q, hi_q = sorted((pos_q[x], pos_q[y]))
        lo_s, hi_s = sorted((pos_s[x], pos_s[y]))
        for p in shared:
            if p not in (x, y) and lo_q < pos_q[p] < hi_q and lo_s < pos_s[p] < hi_s:
                return tuple(sorted((x, y)))  # type: ignore[return-value]
    return None


def check_direction(q: Analysis, s: Analysis) -> Verdict:
    """Swapped roles or direction: "convert X to Y" vs "convert Y to X", "A than B"."""
    pair = _swapped_roles(q, s)
    if pair is not None:
        x, y = pair
        return "direction", (f"{_phrase(q, x)} / {_phrase(q, y)} vs "
                             f"{_phrase(s, x)} / {_phrase(s, y)}")
    pair = _swapped_around_pivot(q, s)
    if pair is not None:
        x, y = pair
        return "direction", f"'{q.display.get(x, x)}' and '{q.display.get(y, y)}' swapped"
    return None


def _phrase(a: Analysis, word: str) -> str:
    role = a.roles.get(word, "")
    shown = a.display.get(word, word)
    return f"{role} {shown}" if role else shown


def _mentions(a: Analysis, name: str) -> bool:
    """Whether ``a`` mentions ``name`` (in any inflection; "datasets.Metric" ~ "Metric")."""
    if name in a.vocabulary or stem(name) in a.stems:
        return True
    if "." in name:
        last = name.rsplit(".", 1)[-1]
        return bool(last) and (last in a.vocabulary or stem(last) in a.stems)
    return False


def check_entities(q: Analysis, s: Analysis) -> Verdict:
    """A name, place, language, product, animal, food... or quoted/code word present in
    one text and absent from the other."""
    missing_in_s = {n for n in q.names if not _mentions(s, n)}
    missing_in_q = {n for n in s.names if not _mentions(q, n)}
    if not (missing_in_s or missing_in_q):
        return None
    return "entity", f"{_show(q, missing_in_s)} vs {_show(s, missing_in_q)}"


#: The rules in the order they run (the first that objects explains the rejection).
RULES: tuple[Callable[[Analysis, Analysis], Verdict], ...] = (
    check_numbers, check_units, check_negation, check_opposites, check_actions,
    check_direction, check_entities,
)
