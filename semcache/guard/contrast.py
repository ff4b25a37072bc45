"""Contrast checks: does a stored prompt ask something else than the query, in a way an
embedding cannot see?

Look-alike questions differ in one or two words: "When was Git created?" / "Who created Git?",
"too cold" / "not cold enough", "check-in" / "check-out", "all three coins" / "at least one",
"Celsius to Fahrenheit" / "Fahrenheit to Celsius", "my first marathon" / "my first half
marathon". Their embeddings are close (cosine 0.90-0.99), closer than many real paraphrases.
Each check here reads both texts (:func:`read`, memoized) and names one such difference:

=============== ============================================================================
check           what differs
=============== ============================================================================
``antonym``     a word of one text has its opposite in the other and not in itself
                (WordNet 3.0 antonyms, the guard's opposite poles, a hand list)
``question``    the kind of answer asked for: time, place, person, reason, quantity
``quantifier``  all / at least one / exactly one / none / some / any
``modality``    can / should / must, in two aligned texts
``ordinal``     first / second / last (both texts name a position, not the same one)
``ordinal_added`` a position modifies a shared word in one text only ("second highest")
``modifier``    in two aligned texts, a word modifies a shared noun in one text only
                ("half marathon" / "marathon", "medium rare" / "rare")
``substitution`` in two aligned texts, one or two words in the same slot differ and are not
                 the same word (inflection, typo, abbreviation)
``order``       the same words around a direction marker, exchanged ("str -> int" / "int ->
                str", "honey instead of sugar" / "sugar instead of honey")
``prefix``      opposite prefixes on one stem ("overinflated" / "underinflated")
``person``      the first person is the subject in one text and the object in the other
                ("I give my son" / "my dad gives me")
``negation``    a different number of negating words (not, no, without, except...)
``comparison``  larger / over vs smaller / under
=============== ============================================================================

Two texts are *aligned* when most of their words line up (``difflib`` ratio >= 0.5): then a
lone different word is the point of the question, not a matter of style. Everything is
deterministic and works on the text alone, whatever the embedder. English word lists
(:mod:`semcache.guard.contrast_words`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

from semcache.guard import contrast_words as cw
from semcache.guard import lexicon as lx
from semcache.guard.text import lemma, stem

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|->|[,;:()]")
#: Stands for punctuation inside a phrase list: a word before it modifies nothing after it.
_BREAK = ","
#: Words that never count as content (function words, filler, direction markers).
_FUNCTION = (lx.STOPWORDS | cw.FILLER | cw.FORWARD_MARKERS | cw.BACKWARD_MARKERS
             | {"of", _BREAK})
_CLOSED_CLASS = (frozenset(cw.QUESTION_CLASSES) | frozenset(cw.QUANTIFIERS)
                 | frozenset(cw.MODALS) | frozenset(cw.ORDINALS) | lx.STOPWORDS | cw.FILLER)
#: Function words that have an opposite: replacing one can change the question.
_CONTRASTIVE = frozenset(w for pair in cw.ANTONYMS for w in pair) & _FUNCTION
#: Texts are aligned from this ``difflib`` ratio of their words on.
ALIGNED = 0.5
#: The alignment checks (modality, modifier, substitution, reordering) read prompts of up to
#: this many words besides filler: in a longer text one changed word rarely changes what is
#: asked.
SHORT = 14


@dataclass(frozen=True, slots=True)
class Reading:
    """What the checks need from one text (lower case)."""

    raw: tuple[str, ...]            # every token, in order
    words: tuple[str, ...]          # tokens without filler ("the", "my", "please", "how")
    questions: frozenset[str]       # kinds of answer asked for
    quantifiers: frozenset[str]
    modals: frozenset[str]          # permission / advice / obligation
    ordinals: frozenset[str]
    comparisons: frozenset[str]     # "greater" / "lesser"
    negations: int
    directions: frozenset[tuple[str, str]]  # (source, target) around a direction marker


def content(word: str) -> bool:
    """A word that carries content: not a function word, not a number."""
    return word not in _CLOSED_CLASS and not any(ch.isdigit() for ch in word)


@lru_cache(maxsize=65536)
def base(word: str) -> str:
    """Lemma without comparison or adverb suffix: "larger" -> "larg", "positively" ->
    "positive" (the antonym check also tries the stem + "e")."""
    w = lemma(word)
    if w.endswith("ly") and len(w) > 5:
        w = w[:-2]
        if w.endswith("i"):
            w = w[:-1] + "y"
    for suffix in ("iest", "ier"):
        if w.endswith(suffix) and len(w) > 5:
            return w[: -len(suffix)] + "y"
    for suffix in ("est", "er"):
        if w.endswith(suffix) and len(w) > len(suffix) + 3 and w not in cw.NOT_SUPERLATIVE:
            stem = w[: -len(suffix)]
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "ls":
                stem = stem[:-1]  # "bigger" -> "big"
            return stem
    return w


def _forms(word: str) -> set[str]:
    b = base(word)
    forms = {word, lemma(word), b, b + "e"}
    for suffix in ("wards", "ward"):
        if word.endswith(suffix):
            forms.add(word[: -len(suffix)])
    return forms


@lru_cache(maxsize=65536)
def opposite(a: str, b: str) -> bool:
    """``a`` and ``b`` are opposites: an antonym pair (in any inflection) or a negating prefix
    ("lock" / "unlock")."""
    if (a, b) in cw.ANTONYMS:
        return True
    fa, fb = _forms(a), _forms(b)
    if any((x, y) in cw.ANTONYMS for x in fa for y in fb):
        return True
    ba, bb = base(a), base(b)
    return min(len(ba), len(bb)) > 3 and any(
        ba == p + bb or bb == p + ba for p in cw.NEGATING_PREFIXES)


def prefix_swap(a: str, b: str) -> bool:
    """Opposite prefixes on the same stem: "overinflated" / "underinflated"."""
    return a != b and any(a.startswith(pa) and b.startswith(pb) and a[len(pa):] == b[len(pb):]
                          and len(a) - len(pa) >= 3 for pa, pb in cw.PREFIX_PAIRS)


def same_thing(a: str, b: str) -> bool:
    """One word abbreviates the other ("dict" / "dictionary", "str" / "string"); a roman
    numeral added is another thing ("WWI" / "WWII", "Rocky II" / "Rocky III")."""
    if a == b:
        return True
    if len(a) < 3 or len(b) < 3:
        return False
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer.startswith(shorter) and not set(longer[len(shorter):]) <= set("ivx")


def _number(word: str) -> str | None:
    value = lx.NUMBER_WORDS.get(word)
    return str(value) if value is not None else (word if word.isdigit() else None)


@lru_cache(maxsize=65536)
def _matches(word: str, other: str) -> bool:
    if other == word or base(other) == base(word) or (word, other) in cw.SYNONYMS \
            or (lemma(word), lemma(other)) in cw.SYNONYMS:
        return True
    number = _number(word)
    if number is not None:
        return number == _number(other)  # "two" / "2"
    if len(word) > 4 and len(other) > 4 and stem(base(word)) == stem(base(other)):
        return not opposite(word, other)  # "founded" / "founder", "causes" / "cause"
    if len(word) >= 3 and len(other) >= 3 and (other.startswith(word) or word.startswith(other)):
        longer, shorter = (other, word) if len(other) > len(word) else (word, other)
        return (len(longer) - len(shorter) <= 8 and longer[len(shorter):] not in ("less", "ful")
                and not opposite(word, other))
    if len(word) < 5 or len(other) < 5 or abs(len(word) - len(other)) > 2 or word[0] != other[0]:
        return False
    typo = SequenceMatcher(None, word, other)  # a typo or another inflection
    return (typo.quick_ratio() >= 0.8 and typo.ratio() >= 0.8
            and not opposite(word, other) and not prefix_swap(word, other))


def matched(word: str, others: frozenset[str] | tuple[str, ...]) -> bool:
    """``word`` has a counterpart among ``others``: the same word, inflection, synonym,
    abbreviation or typo (never an opposite)."""
    return any(_matches(word, other) for other in others)


@lru_cache(maxsize=8192)
def read(text: str) -> Reading:
    """The checks' reading of ``text`` (memoized)."""
    low = text.lower().replace("’", "'").replace("->", " -> ").replace(" - ", " , ")
    low = low.replace("-", " ").replace(" >", " -> ")
    raw = _join_particles([_BREAK if t in ",;:()" else t for t in _WORD_RE.findall(low)])
    nxt = raw[1:] + ("",)
    prev = ("",) + raw[:-1]
    questions, quantifiers = set(), set()
    for w, n, p in zip(raw, nxt, prev, strict=True):
        kind = cw.QUESTION_CLASSES.get(w)
        if w == "what" and n in cw.WHAT_TIME:
            kind = "time"
        elif w == "which" and n in cw.WHICH_PLACE:
            kind = "place"
        elif w == "how" and n in cw.HOW_QUANTITY:
            kind = "quantity"
        elif w == "how" and n in cw.HOW_MANNER:
            kind = "manner"  # "how do cats purr" asks for a mechanism, "why" for a reason
        if kind:
            questions.add(kind)
        q = cw.QUANTIFIERS.get(w)
        if w == "at" and n == "least" or w == "or" and n == "more":
            q = "at least"
        elif w == "least" and p == "at":
            q = None
        elif w in ("one", "single") and p in ("only", "exactly", "just", "a"):
            q = "exactly"
        elif w in ("one", "single") and p in ("not", "no"):
            q = "none"
        if q:
            quantifiers.add(q)
    words = set(raw)
    modals = {cw.MODALS[w] for w in raw if w in cw.MODALS}
    modals.update("must" for w, n in zip(raw, nxt, strict=True)
                  if n == "to" and w in ("have", "has", "need", "needs"))
    return Reading(
        raw=raw, words=tuple(w for w in raw if w not in cw.FILLER and w != _BREAK),
        questions=frozenset(questions), quantifiers=frozenset(quantifiers),
        modals=frozenset(modals),
        ordinals=frozenset(cw.ORDINALS[w] for w in raw if w in cw.ORDINALS),
        comparisons=frozenset(({"greater"} if cw.GREATER & words else set())
                              | ({"lesser"} if cw.LESSER & words else set())),
        negations=sum(1 for i, w in enumerate(raw) if (w in cw.NEGATIONS or w.endswith("n't"))
                      and not (i == 0 and w == "no")),  # a reply's "No, ..." negates nothing
        directions=_directions(raw))


def _join_particles(tokens: list[str]) -> tuple[str, ...]:
    """"turn on" -> "turn_on", as the guard's lexicon spells phrasal verbs."""
    out: list[str] = []
    for t in tokens:
        if t in lx.PARTICLES and out and lemma(out[-1]) in lx.PARTICLE_VERBS:
            out[-1] = f"{lemma(out[-1])}_{t}"
        else:
            out.append(t)
    return tuple(out)


def _directions(raw: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    """(source, target) of the content words around each direction marker."""
    out = set()
    for i, w in enumerate(raw):
        if w not in cw.FORWARD_MARKERS and w not in cw.BACKWARD_MARKERS:
            continue
        left = [t for t in raw[max(0, i - 3):i] if t not in _FUNCTION]
        right = [t for t in raw[i + 1:i + 4] if t not in _FUNCTION]
        if left and right:
            x, y = base(left[-1]), base(right[0])
            out.add((x, y) if w in cw.FORWARD_MARKERS else (y, x))
    return frozenset(out)


@dataclass(slots=True)
class Pair:
    """Two readings and what several checks share: the alignment and the unmatched words."""

    a: Reading
    b: Reading
    ratio: float
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    matcher: SequenceMatcher[str]
    short: bool  # both prompts short enough for the alignment checks

    @classmethod
    def of(cls, query: str, stored: str) -> Pair:
        a, b = read(query), read(stored)
        sm = SequenceMatcher(None, a.words, b.words, autojunk=False)
        set_a, set_b = frozenset(a.words), frozenset(b.words)
        return cls(a, b, sm.ratio(), tuple(w for w in a.words if not matched(w, set_b)),
                   tuple(w for w in b.words if not matched(w, set_a)), sm,
                   len(a.words) <= SHORT and len(b.words) <= SHORT)

    @property
    def aligned(self) -> bool:
        """Short and mostly the same words: a lone difference is the point of the question."""
        return self.short and self.ratio >= ALIGNED


Check = Callable[[Pair], "str | None"]


def _differ(x: frozenset[str], y: frozenset[str]) -> str | None:
    return f"{', '.join(sorted(x))} vs {', '.join(sorted(y))}" if x and y and x != y else None


def check_antonym(p: Pair) -> str | None:
    for x in p.only_a:
        for y in p.only_b:
            if opposite(x, y) and not any(z != y and opposite(z, y) for z in p.b.words) \
                    and not any(z != x and opposite(x, z) for z in p.a.words):
                return f"{x} vs {y}"
    return None


def check_question(p: Pair) -> str | None:
    return _differ(p.a.questions, p.b.questions)


def check_quantifier(p: Pair) -> str | None:
    return _differ(p.a.quantifiers, p.b.quantifiers)


def check_ordinal(p: Pair) -> str | None:
    return _differ(p.a.ordinals, p.b.ordinals)


def _premodifier(x: tuple[str, ...], y: tuple[str, ...], only: set[str],
                 ordinal: bool = False) -> str | None:
    """A word of ``only`` right before a content word ``y`` shares, opening a noun phrase
    (an ordinal needs no determiner and may stand before "most" or a superlative)."""
    ys = set(y)
    for i, w in enumerate(x[:-1]):
        nxt = x[i + 1]
        if w not in only or nxt not in ys:
            continue
        if ordinal:
            if nxt in _FUNCTION and nxt not in ("most", "least"):
                continue
        elif nxt in _FUNCTION or not content(nxt) or not content(w) or w in lx.NUMBER_WORDS or (
                i and x[i - 1] not in cw.DETERMINERS and not any(ch.isdigit() for ch in x[i - 1])):
            continue
        j = y.index(nxt)
        # the other text has no modifier in that slot (a different one is a substitution)
        if j == 0 or y[j - 1] in cw.DETERMINERS or y[j - 1] == _BREAK:
            return f"'{w} {nxt}' vs '{nxt}'"
    return None


def check_ordinal_added(p: Pair) -> str | None:
    ords = set(cw.ORDINALS)
    return (_premodifier(p.a.raw, p.b.raw, set(p.only_a) & ords, ordinal=True)
            or _premodifier(p.b.raw, p.a.raw, set(p.only_b) & ords, ordinal=True))


def check_modifier(p: Pair) -> str | None:
    if not p.aligned:
        return None
    return (_premodifier(p.a.raw, p.b.raw, set(p.only_a))
            or _premodifier(p.b.raw, p.a.raw, set(p.only_b)))


def _telling(word: str) -> bool:
    """A word whose replacement can change the question: a content word, or a function word
    with an opposite ("in", "to", "more"); "of" or "the" cannot."""
    return word not in _FUNCTION or word in _CONTRASTIVE


def check_substitution(p: Pair) -> str | None:
    """One or two words in the same slot of two aligned prompts, without a counterpart on
    the other side ("white" / "brown", "kingside" / "queenside"; "with" / "using" and
    "founded" / "founder of" are the same)."""
    if not p.aligned:
        return None
    a, b = p.a.words, p.b.words
    for tag, i1, i2, j1, j2 in p.matcher.get_opcodes():
        if tag != "replace" or i2 - i1 > 2 or j2 - j1 > 2:
            continue
        xs, ys = a[i1:i2], b[j1:j2]
        if all(matched(x, ys) or not _telling(x) for x in xs) \
                and all(matched(y, xs) or not _telling(y) for y in ys):
            continue
        return f"{' '.join(xs)} vs {' '.join(ys)}"
    return None


def check_modality(p: Pair) -> str | None:
    """Permission, advice or obligation ("can I" / "should I" / "must I") in two aligned
    texts (across rewordings the modal varies freely: "how do I" / "how should I")."""
    return _differ(p.a.modals, p.b.modals) if p.aligned else None


def check_order(p: Pair) -> str | None:
    for x, y in sorted(p.a.directions):
        for x2, y2 in sorted(p.b.directions):
            if same_thing(x, y2) and same_thing(y, x2) and not same_thing(x, y):
                return f"{x} -> {y} vs {x2} -> {y2}"
    # Two content words that trade places, each still apart from the other ("is every square
    # a rectangle" / "is every rectangle a square", "a cough but no fever" / "a fever but no
    # cough"); other reorderings are rewordings ("longest river africa" / "Africa's longest
    # river", "git undo" / "undo git"); swaps around markers are the flow check's.
    swap = _transposed(p.a.raw, p.b.raw)
    return f"'{swap[0]}' and '{swap[1]}' trade places" if swap else None


def _transposed(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, str] | None:
    """The two content words whose exchange turns ``a``'s content words into ``b``'s, when
    the rest keep their order and the two are not next to each other in either text."""
    pa = [(i, base(w)) for i, w in enumerate(a) if w not in _FUNCTION and content(w)]
    pb = [(i, base(w)) for i, w in enumerate(b) if w not in _FUNCTION and content(w)]
    wa, wb = [w for _, w in pa], [w for _, w in pb]
    if len(wa) != len(wb) or len(wa) < 2 or wa == wb or sorted(wa) != sorted(wb):
        return None
    diff = [k for k in range(len(wa)) if wa[k] != wb[k]]
    if len(diff) != 2:
        return None
    i, j = diff
    if wa[i] != wb[j] or wa[j] != wb[i] or pa[j][0] - pa[i][0] < 2 or pb[j][0] - pb[i][0] < 2:
        return None
    return wa[i], wa[j]


def check_prefix(p: Pair) -> str | None:
    return next((f"{x} vs {y}" for x in p.only_a for y in p.only_b if prefix_swap(x, y)), None)


def _first_person_roles(raw: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """Words right after "I"/"we" (done by me) and right before "me"/"us" (done to me)."""
    subject, obj = set(), set()

    def verb(t: str) -> bool:
        return t not in cw.FILLER and t not in cw.DETERMINERS and t != _BREAK

    for i, w in enumerate(raw):
        if w in cw.FIRST_PERSON_SUBJECT:
            word = next((t for t in raw[i + 1:i + 3] if verb(t)), None)
            if word:
                subject.add(base(word))
        if w in cw.FIRST_PERSON_OBJECT and i:
            word = next((t for t in reversed(raw[max(0, i - 2):i]) if verb(t)), None)
            if word:
                obj.add(base(word))
    return subject, obj


def check_person(p: Pair) -> str | None:
    sa, oa = _first_person_roles(p.a.raw)
    sb, ob = _first_person_roles(p.b.raw)
    flipped = ((sa & ob) - oa) or ((sb & oa) - ob)
    return f"who does '{min(flipped)}'" if flipped else None


def check_negation(p: Pair) -> str | None:
    """A different count of negating words in two short prompts ("except", "without" count;
    the guard's own negation rule, which runs first, forgives implicit negations)."""
    na, nb = p.a.negations, p.b.negations
    return f"{na} vs {nb} negations" if na != nb and p.short else None


def check_comparison(p: Pair) -> str | None:
    return _differ(p.a.comparisons, p.b.comparisons)


#: The checks in the order they run (the first that finds a difference explains it).
CHECKS: tuple[tuple[str, Check], ...] = (
    ("antonym", check_antonym), ("question", check_question),
    ("quantifier", check_quantifier), ("modality", check_modality), ("ordinal", check_ordinal),
    ("ordinal_added", check_ordinal_added), ("order", check_order),
    ("prefix", check_prefix), ("person", check_person), ("comparison", check_comparison),
    ("negation", check_negation), ("modifier", check_modifier),
    ("substitution", check_substitution),
)

def clear_memos() -> None:
    """Forget every text reading (both the guard's analyses and this module's): the next
    comparison reads its texts from scratch (for timing the worst case)."""
    from semcache.guard.text import analyze

    analyze.cache_clear()
    read.cache_clear()


__all__ = ["ALIGNED", "CHECKS", "clear_memos", "Pair", "Reading", "base", "matched", "opposite", "read"]
