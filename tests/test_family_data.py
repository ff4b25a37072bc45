"""The labelled family sets and attack pairs of issue 22 follow their format, and a broken
file is refused with a message naming what is wrong."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from family_data import (  # noqa: E402
    DataError,
    attack_path,
    family_path,
    load_attacks,
    load_families,
)


def test_the_dev_family_set_has_the_size_the_issue_asks_for() -> None:
    fs = load_families(family_path("dev"))
    assert fs.split == "dev"
    assert len(fs.families) >= 80 and fs.n_intents >= 200 and len(fs.unrelated) >= 100
    assert fs.n_phrasings == 5 * fs.n_intents
    assert all(2 <= len(f["intents"]) <= 4 for f in fs.families)
    queries = fs.queries()
    assert len(queries) == fs.n_phrasings + len(fs.unrelated)
    assert fs.best_possible() == pytest.approx(
        (fs.n_phrasings - fs.n_intents) / len(queries))
    # the stream order is seeded: the same seed gives the same order, another one another
    assert [q.text for q in fs.stream(0)] == [q.text for q in fs.stream(0)]
    assert [q.text for q in fs.stream(0)] != [q.text for q in fs.stream(1)]


def test_the_dev_attack_pairs() -> None:
    pairs = load_attacks(attack_path("dev"))
    assert len(pairs) >= 100
    assert len({(p["stored"], p["query"]) for p in pairs}) == len(pairs)


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "families_x.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _family(intent_id: str, answer: str, n: int = 5) -> dict:
    return {"id": intent_id, "answer": answer,
            "phrasings": [f"{intent_id} question {i}?" for i in range(n)]}


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["families"][0]["intents"][0]["phrasings"].pop(), "exactly 5 phrasings"),
    (lambda d: d["families"][0]["intents"][1].update(id="a"), "duplicate ids"),
    (lambda d: d["families"][0]["intents"][1].update(answer="answer a"), "duplicate answers"),
    (lambda d: d["families"][0]["intents"].pop(), "2-4 intents"),
    (lambda d: d["unrelated"][0].update(text="a question 0?"), "duplicate question texts"),
    (lambda d: d["unrelated"][0].pop("answer"), "needs id, text and answer"),
])
def test_a_broken_family_file_is_refused(tmp_path: Path, change, message: str) -> None:
    doc = {"split": "x", "families": [{"id": "f", "domain": "d", "intents": [
        _family("a", "answer a"), _family("b", "answer b")]}],
        "unrelated": [{"id": "u", "text": "unrelated?", "answer": "answer u"}]}
    load_families(_write(tmp_path, doc))  # the intact file loads
    change(doc)
    with pytest.raises(DataError, match=message):
        load_families(_write(tmp_path, doc))
