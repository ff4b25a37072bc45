"""The labelled family sets and attack pairs of issue 22: loading, checking, stream order.

``benchmarks/data/families_<split>.json``: families of look-alike intents that need different
answers, each intent asked in exactly 5 phrasings, plus unrelated single questions (format in
``benchmarks/data/README.md``). ``benchmarks/data/attack_pairs_<split>.json``: a stored question
and a close query that needs another answer.

Used by ``scripts/quality_stream.py`` (the stream evaluation), ``scripts/train_decision.py``
(training the semantic decision on the dev split) and ``tests/test_family_data.py``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
PHRASINGS_PER_INTENT = 5


class DataError(ValueError):
    """A family or attack file that does not follow the format."""


@dataclass(frozen=True, slots=True)
class Query:
    """One query of the stream: its text, the intent it asks (``label``), that intent's
    answer and its family (``""`` for an unrelated question)."""

    text: str
    label: str
    answer: str
    family: str


@dataclass(frozen=True, slots=True)
class FamilySet:
    split: str
    path: Path
    families: list[dict[str, Any]]
    unrelated: list[dict[str, str]]

    def queries(self) -> list[Query]:
        """Every phrasing and every unrelated question, in file order."""
        out = [Query(p, i["id"], i["answer"], f["id"])
               for f in self.families for i in f["intents"] for p in i["phrasings"]]
        out += [Query(u["text"], u["id"], u["answer"], "") for u in self.unrelated]
        return out

    def stream(self, seed: int) -> list[Query]:
        """The queries in the seeded shuffled order of the stream evaluation."""
        queries = self.queries()
        random.Random(seed).shuffle(queries)
        return queries

    @property
    def n_intents(self) -> int:
        return sum(len(f["intents"]) for f in self.families)

    @property
    def n_phrasings(self) -> int:
        return sum(len(i["phrasings"]) for f in self.families for i in f["intents"])

    def best_possible(self) -> float:
        """Hit rate of a perfect cache: every phrasing after its intent's first is a hit."""
        return (self.n_phrasings - self.n_intents) / (self.n_phrasings + len(self.unrelated))


def family_path(split: str) -> Path:
    return DATA / f"families_{split}.json"


def attack_path(split: str) -> Path:
    return DATA / f"attack_pairs_{split}.json"


def _need(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise DataError(f"{path}: {what}")


def load_families(path: Path) -> FamilySet:
    """Read and check a family file (raises :class:`DataError` naming what is wrong)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    _need(isinstance(doc, dict) and {"families", "unrelated", "split"} <= doc.keys(), path,
          "expected an object with split, families and unrelated")
    families, unrelated = doc["families"], doc["unrelated"]
    ids: list[str] = []
    answers: list[str] = []
    texts: list[str] = []
    for f in families:
        _need(isinstance(f.get("id"), str) and 2 <= len(f.get("intents", [])) <= 4, path,
              f"family {f.get('id')!r} must have an id and 2-4 intents")
        for i in f["intents"]:
            phr = i.get("phrasings", [])
            _need(len(phr) == PHRASINGS_PER_INTENT and all(isinstance(p, str) and p.strip()
                                                           for p in phr), path,
                  f"intent {i.get('id')!r} must have exactly {PHRASINGS_PER_INTENT} phrasings")
            _need(isinstance(i.get("answer"), str) and i["answer"].strip() != "", path,
                  f"intent {i.get('id')!r} has no answer")
            ids.append(i["id"])
            answers.append(i["answer"])
            texts += phr
    for u in unrelated:
        _need(all(isinstance(u.get(k), str) and u[k].strip() for k in ("id", "text", "answer")),
              path, f"unrelated entry {u!r} needs id, text and answer")
        ids.append(u["id"])
        answers.append(u["answer"])
        texts.append(u["text"])
    for name, values in (("id", ids), ("answer", answers), ("question text", texts)):
        dup = [v for v, n in Counter(values).items() if n > 1]
        _need(not dup, path, f"duplicate {name}s: {dup[:3]}")
    return FamilySet(str(doc["split"]), path, families, unrelated)


def load_attacks(path: Path) -> list[dict[str, str]]:
    """The attack pairs ``{stored, query, kind}`` of a file (checked)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    pairs = doc.get("pairs") if isinstance(doc, dict) else None
    _need(isinstance(pairs, list) and bool(pairs), path, "expected an object with pairs")
    for p in pairs:
        _need(all(isinstance(p.get(k), str) and p[k].strip() for k in ("stored", "query", "kind"))
              and p["stored"] != p["query"], path, f"bad pair {p!r}")
    return pairs


__all__ = ["DATA", "DataError", "FamilySet", "Query", "attack_path", "family_path",
           "load_attacks", "load_families"]
