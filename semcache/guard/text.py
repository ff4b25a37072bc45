"""Reading one prompt for the near-miss guard: tokens, lemmas, and the features the
rules compare (numbers, units, negations, opposite poles, names, roles).

:func:`analyze` does all the work for one text in a single pass over its tokens, so a
comparison costs two analyses and a few set operations. Results are memoized (a small
LRU keyed by the text), which makes the query's analysis free for the second and later
candidates of one lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from semcache.guard import lexicon as lx

# Numbers ("1,000", "3.12", "1990s", "100mg"), words ("don't", "node.js", "C++",
# "set_format", "Tesla's") and the symbols that act as units.
_TOKEN_RE = re.compile(
    r"(?P<num>[vV]?\d+(?:[.,]\d+)*)(?P<suffix>[A-Za-z]+)?"
    r"|(?P<word>[^\W\d_](?:[\w'’]*\w)?(?:\+\+|#)?(?:\.[^\W\d_]\w*)*)"
    r"|(?P<sym>[$€£¥%])"
)
_QUOTED_RE = re.compile(r"\"([^\"]{1,200})\"|“([^”]{1,200})”|‘([^’]{1,200})’|`([^`]{1,200})`"
                        r"|(?<!\w)'([^']{1,200})'(?!\w)")
_SENTENCE_END = frozenset(".!?:;\n\"“'‘(`[")
_PHRASE_END = frozenset(",;:.!?()[]{}\n\"“”")
_DEFAULT_MARKER_WINDOW = 4
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th", "s"})


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the rules need from one text (all words lower case, lemmatized)."""

    words: tuple[str, ...]            # lemmas of the word tokens, in order
    vocabulary: frozenset[str]        # lemmas, raw lower-case forms, aliases, joined pairs
    numbers: frozenset[str]           # normalized numeric values ("2019", "3.12", "1000")
    soft_numbers: frozenset[str]      # values only spelled as "one" (an article in disguise)
    units: frozenset[str]             # canonical units ("kilometer", "percent")
    negations: tuple[str, ...]        # the negating words found, in order
    implicit_negations: int           # words such as "avoid", "omit", "lack"
    names: frozenset[str]             # entities, names, identifiers, quoted content words
    display: dict[str, str]           # lemma -> the form written in the text (for details)
    roles: dict[str, str]             # content word seen once -> its role marker ("" = none)
    stems: frozenset[str]             # suffix-stripped lemmas ("loading" -> "load")
    passive: bool                     # "by ..." or "is used": word order is not the roles


@lru_cache(maxsize=65536)
def lemma(word: str) -> str:
    """Lower-case singular form: "Bananas" -> "banana", "Tesla's" -> "tesla"."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    elif w.endswith("'"):
        w = w[:-1]
    irregular = lx.IRREGULAR.get(w)
    if irregular is not None:
        return irregular
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ses", "xes", "ches", "shes", "zes")) and not w.endswith("ases"):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is", "'s")):
        return w[:-1]
    return w


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude stem for matching names across inflections ("Loading" ~ "Load")."""
    for suffix in ("ing", "ion", "ed", "es", "e", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _normalize_number(digits: str) -> str:
    """"1,000" -> "1000"; "3.10" stays "3.10" (versions differ from values)."""
    if "," in digits and all(len(g) == 3 for g in digits.split(",")[1:]):
        digits = digits.replace(",", "")
    digits = digits.replace(",", ".")
    digits = digits.lstrip("vV")
    if "." not in digits:
        digits = digits.lstrip("0") or "0"
    return digits


class _Reader:
    """One pass over the tokens of a text, filling the feature sets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.words: list[str] = []
        self.raw: list[str] = []
        self.numbers: set[str] = set()
        self.soft: set[str] = set()
        self.units: set[str] = set()
        self.negations: list[str] = []
        self.names: set[str] = set()
        self.display: dict[str, str] = {}
        self.phrases: list[int] = []      # phrase number of each word (punctuation splits)
        self.phrase = 0
        self.extra_vocabulary: set[str] = set()
        self.implicit = 0
        self.last_end = 0
        self.answer_no = False            # the text starts with "No," (a reply, not a negation)
        self.caps_run: list[str] = []
        self.pending_number: int | None = None
        self.prev = ""          # previous lower-case raw token ("" at the start)
        self.prev_numeric = False

    def feed(self) -> None:
        """Tokenize and classify every token."""
        text = self.text
        for match in _TOKEN_RE.finditer(text):
            gap = text[self.last_end:match.start()]
            if gap and gap != " " and not _PHRASE_END.isdisjoint(gap):
                self.phrase += 1
                self._end_caps_run()
            self.last_end = match.end()
            num = match.group("num")
            if num is not None:
                self._number(num, match.group("suffix"))
                continue
            sym = match.group("sym")
            if sym is not None:
                self._flush_number_words()
                unit = lx.UNITS.get(sym)
                if unit:
                    self.units.add(unit)
                self.prev, self.prev_numeric = sym, False
                continue
            self._word(match.group("word"), match.start())
        self._flush_number_words()
        self._end_caps_run()

    def _end_caps_run(self) -> None:
        """"Random Access Memory" also reads as "ram" (acronyms match their expansion)."""
        if len(self.caps_run) >= 2:
            self.extra_vocabulary.add("".join(w[0] for w in self.caps_run))
        self.caps_run = []

    def _number(self, digits: str, suffix: str | None) -> None:
        self._flush_number_words()
        self._end_caps_run()
        value = _normalize_number(digits)
        if suffix:
            low = suffix.lower()
            self.extra_vocabulary.add(digits.lower() + low)
            if low in lx.NUMBER_SUFFIX_SCALE and "." not in value:
                value = str(int(value) * lx.NUMBER_SUFFIX_SCALE[low])
            elif low in lx.UNITS:
                self.units.add(lx.UNITS[low])
            elif low not in _ORDINAL_SUFFIXES:
                self.names.add(digits + low)  # "3d", "1080p": an identifier
        self.numbers.add(value)
        self.prev, self.prev_numeric = value, True

    def _flush_number_words(self) -> None:
        if self.pending_number is not None:
            self.numbers.add(str(self.pending_number))
            self.pending_number = None

    def _number_word(self, low: str) -> bool:
        """Accumulate "twenty five", "two hundred"; True if ``low`` was a number word."""
        if low in lx.NUMBER_WORDS:
            value = lx.NUMBER_WORDS[low]
            if low in ("one", "zero") and self.pending_number is None:
                self.soft.add(str(value))
            self.pending_number = (self.pending_number or 0) + value
            return True
        if low in lx.NUMBER_SCALES and (self.pending_number is not None or self.prev_numeric):
            if self.pending_number is None:  # "5 million"
                last = max(self.numbers, key=len, default="1")
                self.numbers.discard(last)
                self.pending_number = int(float(last)) if last.replace(".", "").isdigit() else 1
            self.pending_number *= lx.NUMBER_SCALES[low]
            return True
        self._flush_number_words()
        return False

    def _word(self, word: str, start: int) -> None:
        low = word.lower()
        if "’" in low:
            low = low.replace("’", "'")
        capital = word[0].isupper()
        if capital and low not in lx.STOPWORDS:
            self.caps_run.append(low)
        elif self.caps_run:
            self._end_caps_run()
        if not self.words and low == "no" and self.text[start + 2:start + 3] in (",", ".", "!"):
            self.answer_no = True
        if (low in lx.NUMBER_WORDS or low in lx.NUMBER_SCALES or self.pending_number is not None) \
                and self._number_word(low):
            self.phrases.append(self.phrase)
            self.words.append(low)
            self.raw.append(low)
            self.prev, self.prev_numeric = low, True
            return
        base = lemma(low)
        if low in lx.PARTICLES and self.words \
                and (self.prev in lx.PARTICLE_VERBS or lemma(self.prev) in lx.PARTICLE_VERBS):
            base = f"{lemma(self.prev)}_{low}"  # "turn on" -> "turn_on"
            self.words[-1] = base
            self.display.setdefault(base, f"{self.prev} {word}")
        else:
            self.words.append(base)
            self.phrases.append(self.phrase)
        if "." in low:
            self.extra_vocabulary.update(lemma(part) for part in low.split(".") if part)
        self.raw.append(low)
        self.display.setdefault(base, word)
        self._classify(word, low, base, start, capital)
        self.prev, self.prev_numeric = low, False

    def _classify(self, word: str, low: str, base: str, start: int, capital: bool) -> None:
        if low in lx.IMPLICIT_NEGATIONS:
            self.implicit += 1
        unit = lx.UNITS.get(low) or lx.UNITS.get(base)
        if unit and (base not in lx.AMBIGUOUS_UNITS or low != base
                     or self.prev_numeric or self.prev in ("per", "a", "an", "each", "every")):
            self.units.add(unit)
        if base in lx.ENTITIES and (capital or base not in lx.AMBIGUOUS_ENTITIES):
            self.names.add(lx.ALIASES.get(base, base))
        elif word.isalpha() and word.islower() or base in lx.NOT_NAMES:
            return
        elif self._is_name(word, base, start) or _is_identifier(word):
            self.names.add(lx.ALIASES.get(base, base))

    def _is_name(self, word: str, base: str, start: int) -> bool:
        """A capitalized word inside a sentence, or an inner capital ("iPhone", "JAX")."""
        if base in lx.NOT_NAMES or base in lx.STOPWORDS:
            return False
        tail = word[1:]
        if tail != tail.lower():
            return True
        if not word[0].isupper():
            return False
        i = start - 1
        while i >= 0 and self.text[i] in " \t":
            i -= 1
        return i >= 0 and self.text[i] not in _SENTENCE_END

    def negation_words(self) -> tuple[str, ...]:
        """Negations that negate (drops "not only", "whether or not", "no matter"...)."""
        out = []
        raw = self.raw
        for i, low in enumerate(raw):
            if not (low in lx.NEGATIONS or low.endswith("n't")) or (i == 0 and self.answer_no):
                continue
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            before = raw[i - 1] if i else ""
            if (low, nxt) in lx.NEGATION_IDIOMS or (before, low) in lx.NEGATION_IDIOMS:
                continue
            out.append(low)
        return tuple(out)


def _is_identifier(word: str) -> bool:
    """Code-like or versioned tokens: "file_name", "node.js", "C#", "ipv4", "python3"."""
    if word.isalpha():
        return False
    if "_" in word or "." in word or word.endswith(("++", "#")):
        return True
    return not word.replace("'", "").replace("’", "").isalpha()


def _roles(words: list[str], phrases: list[int],
           window: int = _DEFAULT_MARKER_WINDOW) -> dict[str, str]:
    """Each content word that occurs once -> the role marker that opens its phrase.

    The marker is the nearest preposition before the word with only function words in
    between, within the same punctuation-delimited phrase ("from my savings" -> "from").
    """
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    roles: dict[str, str] = {}
    for i, w in enumerate(words):
        if counts[w] != 1 or w in lx.STOPWORDS or w in lx.ROLE_MARKERS:
            continue
        role = ""
        for j in range(i - 1, max(-1, i - 1 - window), -1):
            if phrases[j] != phrases[i]:
                break
            if words[j] in lx.ROLE_MARKERS:
                role = words[j]
                break
            if words[j] not in lx.STOPWORDS:
                break
        roles[w] = role
    return roles


def _passive(raw: list[str]) -> bool:
    """A passive construction: "by", or a form of "be" followed by a participle."""
    for i, w in enumerate(raw):
        if w == "by":
            return True
        if w in _BE and any(n.endswith(("ed", "en")) for n in raw[i + 1:i + 3]):
            return True
    return False


_BE = frozenset({"is", "are", "was", "were", "be", "been", "being", "get", "gets", "got"})


def _quoted_words(text: str) -> set[str]:
    """Content lemmas inside quotes or backticks (they must be matched verbatim)."""
    out: set[str] = set()
    if not any(q in text for q in "\"“‘`'"):
        return out
    for match in _QUOTED_RE.finditer(text):
        inner = next(g for g in match.groups() if g is not None)
        for token in _TOKEN_RE.finditer(inner):
            word = token.group("word")
            if word:
                base = lemma(word)
                if base not in lx.STOPWORDS:
                    out.add(base)
    return out


@lru_cache(maxsize=4096)
def analyze(text: str) -> Analysis:
    """The guard's reading of ``text`` (memoized; see the module docstring)."""
    reader = _Reader(text)
    reader.feed()
    words = reader.words
    vocabulary = set(words)
    vocabulary.update(reader.raw)
    vocabulary.update(lx.ALIASES.get(w, w) for w in words)
    vocabulary.update(a + b for a, b in zip(reader.raw, reader.raw[1:], strict=False))
    vocabulary.update(reader.extra_vocabulary)
    names = reader.names | {lx.ALIASES.get(w, w) for w in _quoted_words(text)}
    numbers = frozenset(reader.numbers)
    return Analysis(
        words=tuple(words), vocabulary=frozenset(vocabulary), numbers=numbers,
        soft_numbers=frozenset(reader.soft & numbers), units=frozenset(reader.units),
        negations=reader.negation_words(), implicit_negations=reader.implicit,
        names=frozenset(names), display=reader.display, roles=_roles(words, reader.phrases),
        stems=frozenset(stem(w) for w in words), passive=_passive(reader.raw),
    )
