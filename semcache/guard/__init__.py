"""The near-miss guard: a last check on a semantic hit before its answer is served.

A semantic cache answers a new prompt with the answer of a stored prompt whose embedding
is close enough. Embeddings are close for prompts that share their words but not their
meaning: "enable" vs "disable", "from A to B" vs "from B to A", 2019 vs 2020, "safe" vs
"not safe", Python vs Java. After the cosine decision, :meth:`NearMissGuard.check`
compares the query text with the candidate's stored prompt and rejects the candidate
when they differ in one of these ways:

=================== =======================================================================
reason              what differs
=================== =======================================================================
``number``          numbers, years, amounts, versions ("2019" vs "2020", "five" vs "ten")
``unit``            units and currencies ("pound" vs "ounce", "euro" vs "dollar")
``negation``        the count of negating words ("safe" vs "not safe", "with" vs "without")
``opposite_action`` opposite verbs or qualities (enable/disable, buy/sell, install/uninstall,
                    maximum/minimum) or different tasks on one object (increase vs check)
``direction``       swapped roles ("from X to Y" vs "from Y to X", "X than Y", "X in Y")
``entity``          a name, place, language, product, animal, food, code identifier or
                    quoted word present in one prompt and absent from the other
=================== =======================================================================

It is rules and word lists only (``semcache.guard.lexicon``): no model, no network, no
randomness. It works with any embedder and decides identically in every process. A
comparison takes about 0.1 ms (``scripts/quality.py`` measures it). The lists are English;
other languages get only the number, name, code and quote checks.

Usage::

    guard = NearMissGuard()
    rejection = guard.check("How do I disable 2FA?", "How do I enable 2FA?")
    if rejection is not None:
        print(rejection)   # opposite_action: disable vs enable
"""

from __future__ import annotations

from dataclasses import dataclass

from semcache.guard.decision import DECISION_REASONS, SemanticDecision, Verdict
from semcache.guard.rules import RULES
from semcache.guard.text import Analysis, analyze, lemma

__all__ = ["DECISION_REASONS", "REASONS", "GuardRejection", "NearMissGuard", "SemanticDecision",
           "Verdict", "analyze", "explain", "lemma"]

#: Every ``GuardRejection.reason`` the guard can give.
REASONS: tuple[str, ...] = ("number", "unit", "negation", "opposite_action", "direction",
                            "entity")


@dataclass(frozen=True, slots=True)
class GuardRejection:
    """Why a candidate was rejected: a category (one of :data:`REASONS`) and the words.

    ``detail`` reads "<query side> vs <stored side>", e.g. ``"2019 vs 2020"``.
    """

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class NearMissGuard:
    """Compares a query with a candidate's stored prompt; see the module docstring.

    Stateless apart from a memo of text analyses (bounded, shared by all instances), so
    one instance can serve every thread and namespace.
    """

    def check(self, query: str, stored: str) -> GuardRejection | None:
        """``None`` if ``stored``'s answer may serve ``query``, else why not.

        Both arguments are the prompt texts (the query as asked, the stored prompt as it
        was cached); identical texts always pass.
        """
        if query == stored:
            return None
        q, s = analyze(query), analyze(stored)
        for rule in RULES:
            verdict = rule(q, s)
            if verdict is not None:
                return GuardRejection(*verdict)
        return None

    def first_passing(self, query: str, candidates: list[str]) -> tuple[int, list[GuardRejection]]:
        """Index of the first candidate prompt that passes (``-1`` if none), and the
        rejections of those before it, in order. For a lookup that tries its candidates
        from the most to the least similar."""
        rejected: list[GuardRejection] = []
        for i, stored in enumerate(candidates):
            verdict = self.check(query, stored)
            if verdict is None:
                return i, rejected
            rejected.append(verdict)
        return -1, rejected


def explain(query: str, stored: str) -> dict[str, object]:
    """Both analyses and the verdict, for debugging a surprising decision."""
    q: Analysis = analyze(query)
    s: Analysis = analyze(stored)
    verdict = NearMissGuard().check(query, stored)
    return {"query": q, "stored": s, "verdict": None if verdict is None else str(verdict)}
