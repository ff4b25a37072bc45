"""The near-miss guard: every category rejects, rewordings pass, explanations are stable.

Speed is measured by scripts/quality.py (guard latency p50/p99), not asserted here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semcache.guard import REASONS, GuardRejection, NearMissGuard, analyze

ROOT = Path(__file__).resolve().parent.parent
GUARD = NearMissGuard()


def verdict(query: str, stored: str) -> GuardRejection | None:
    return GUARD.check(query, stored)


@pytest.mark.parametrize(("query", "stored", "reason", "detail"), [
    ("Who won the World Cup in 2018?", "Who won the World Cup in 2014?", "number", "2018 vs 2014"),
    ("Give me ten ideas for a party.", "Give me five ideas for a party.", "number", "10 vs 5"),
    ("What's new in Python 3.12?", "What's new in Python 3.8?", "number", "3.12 vs 3.8"),
    ("What is 25% of 1,000?", "What is 15% of 1,000?", "number", "25 vs 15"),
    ("How many grams are in an ounce?", "How many grams are in a pound?", "unit",
     "ounce vs pound"),
    ("Convert 50 euros to yen.", "Convert 50 euros to dollars.", "unit", "yen vs dollars"),
    ("Which foods are not safe during pregnancy?", "Which foods are safe during pregnancy?",
     "negation", "'not' only in the query prompt"),
    ("Hotels in Rome with free cancellation", "Hotels in Rome without free cancellation",
     "negation", "'without' only in the stored prompt"),
    ("Why won't my car start?", "Why does my car start?", "negation",
     "'won't' only in the query prompt"),
    ("How do I disable two-factor authentication?", "How do I enable two-factor authentication?",
     "opposite_action", "disable vs enable"),
    ("How do I decrypt a file with GPG?", "How do I encrypt a file with GPG?",
     "opposite_action", "decrypt vs encrypt"),
    ("How do I uninstall Node.js on Ubuntu?", "How do I install Node.js on Ubuntu?",
     "opposite_action", "uninstall vs install"),
    ("How do I sell Bitcoin?", "How do I buy Bitcoin?", "opposite_action", "sell vs buy"),
    ("How do I turn off dark mode?", "How do I turn on dark mode?", "opposite_action",
     "turn off vs turn on"),
    ("How can I decrease the font size?", "How can I increase the font size?",
     "opposite_action", "decrease vs increase"),
    ("How do I check my credit score?", "How do I increase my credit score?",
     "opposite_action", "check vs increase"),
    ("Find flights from London to New York.", "Find flights from New York to London.",
     "direction", "from London / to New vs to London / from New"),
    ("Convert 10 kilometers to miles.", "Convert 10 miles to kilometers.", "direction", None),
    ("Is an alligator bigger than a crocodile?", "Is a crocodile bigger than an alligator?",
     "direction", None),
    ("Why did the man bite the dog?", "Why did the dog bite the man?", "direction",
     "'dog' and 'man' swapped"),
    ("How do I sort a list in Java?", "How do I sort a list in Python?", "entity",
     "Java vs Python"),
    ("What is the capital of Germany?", "What is the capital of France?", "entity",
     "Germany vs France"),
    ("Is chocolate toxic to parrots?", "Is chocolate toxic to dogs?", "entity", "parrots vs dogs"),
    ("Who founded Amazon?", "Who founded Microsoft?", "entity", "Amazon vs Microsoft"),
    ("Translate 'good morning' to German.", "Translate 'good night' to German.",
     "opposite_action", "morning vs night"),
    ("Translate 'see you soon' to German.", "Translate 'see you later' to German.", "entity",
     "soon vs later"),
    ("How do I sort a list in Python?", "How do I sort a list?", "entity", "Python vs none"),
])
def test_each_category_rejects_with_an_explanation(query: str, stored: str, reason: str,
                                                   detail: str | None) -> None:
    got = verdict(query, stored)
    assert got is not None, (query, stored)
    assert got.reason == reason, got
    assert got.reason in REASONS
    if detail is not None:
        assert got.detail == detail, got
    assert str(got) == f"{got.reason}: {got.detail}"


@pytest.mark.parametrize(("query", "stored"), [
    ("What's the capital of France?", "What is the capital of France?"),
    ("How can I turn on two-factor authentication for Gmail?",
     "How do I enable two-factor authentication on Gmail?"),
    ("How can I disable dark mode in Chrome?", "How do I turn off dark mode in Chrome?"),
    ("Why isn't my laptop charging?", "Why is my laptop not charging?"),
    ("Which countries don't require a visa?", "Which countries do not require a visa?"),
    ("How many kilometers is 10 miles?", "Convert 10 miles to kilometers."),
    ("Can you plan a three-day trip to Kyoto for me?", "Plan a 3-day trip to Kyoto."),
    ("How much is 15 percent of 200?", "What is 15% of 200?"),
    ("How many calories are in a banana?", "How many calories are in one banana?"),
    ("What is IKEA's return policy?", "What is the return policy at IKEA?"),
    ("Give me a summary of Jane Austen's Pride and Prejudice.",
     "Summarize the plot of Pride and Prejudice by Jane Austen."),
    ("How can I remove Node.js from Ubuntu?", "How do I uninstall Node.js on Ubuntu?"),
    ("What's the maximum possible score on the SAT?", "What is the highest score possible on the SAT?"),
    ("Are crocodiles bigger than alligators?", "Is a crocodile bigger than an alligator?"),
    ("How can I move money from my savings account to my checking account?",
     "How do I transfer money from my savings account to my checking account?"),
    ("Which foods are unsafe to eat when pregnant?", "Which foods are not safe to eat when pregnant?"),
    ("how do i sort a list in python", "How do I sort a list in Python?"),
])
def test_rewordings_pass(query: str, stored: str) -> None:
    assert verdict(query, stored) is None
    assert verdict(stored, query) is None


def test_identical_texts_pass_and_verdicts_are_symmetric() -> None:
    text = "How do I enable 2FA in 2024?"
    assert verdict(text, text) is None
    pairs = [("How do I enable 2FA?", "How do I disable 2FA?"),
             ("Flights from Paris to Rome", "Flights from Rome to Paris"),
             ("Sort a list in Go", "Sort a list in Rust")]
    for a, b in pairs:
        ab, ba = verdict(a, b), verdict(b, a)
        assert ab is not None and ba is not None
        assert ab.reason == ba.reason


def test_rejection_is_a_frozen_dataclass() -> None:
    got = verdict("Who won in 2019?", "Who won in 2020?")
    assert got == GuardRejection("number", "2019 vs 2020")
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.reason = "entity"  # type: ignore[misc]


def test_first_passing_skips_rejected_candidates_in_order() -> None:
    index, rejected = GUARD.first_passing(
        "How do I disable 2FA on Gmail?",
        ["How do I enable 2FA on Gmail?", "How do I disable 2FA on Outlook?",
         "How can I turn off 2FA on Gmail?"])
    assert index == 2
    assert [r.reason for r in rejected] == ["opposite_action", "entity"]
    assert GUARD.first_passing("Sort in Python", ["Sort in Java"]) == (
        -1, [GuardRejection("entity", "Python vs Java")])


def test_analysis_reads_numbers_units_and_names() -> None:
    a = analyze("Convert twenty five kilometers to miles for my iPhone in 2024, not 1,000.")
    assert a.numbers == {"25", "2024", "1000"}
    assert a.units == {"kilometer", "mile"}
    assert a.negations == ("not",)
    assert "iphone" in a.names


def test_non_english_text_only_gets_number_and_name_checks() -> None:
    assert verdict("Wie spät ist es in Berlin?", "Wie spät ist es in Berlin?") is None
    got = verdict("Wer gewann 2014?", "Wer gewann 2018?")
    assert got is not None and got.reason == "number"


def test_verdicts_are_identical_across_processes_with_different_hash_seeds() -> None:
    data = json.loads((ROOT / "benchmarks/data/hard_negatives.json").read_text("utf-8"))
    pairs = [(p["query"], p["stored"]) for p in data["pairs"]]
    script = (
        "import json, sys\n"
        "from semcache.guard import NearMissGuard\n"
        "g = NearMissGuard()\n"
        "pairs = json.loads(sys.stdin.read())\n"
        "print(json.dumps([str(g.check(q, s)) for q, s in pairs]))\n"
    )
    outputs = []
    for seed in ("1", "2", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
        run = subprocess.run([sys.executable, "-c", script], input=json.dumps(pairs),
                             capture_output=True, text=True, env=env, check=True, timeout=120)
        outputs.append(run.stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    here = json.dumps([str(GUARD.check(q, s)) for q, s in pairs])
    assert outputs[0].strip() == here


def test_every_hard_negative_is_rejected_and_every_rewording_of_the_dev_split_passes() -> None:
    """The shipped data sets (dev split: the one the rules were written against)."""
    hard = json.loads((ROOT / "benchmarks/data/hard_negatives.json").read_text("utf-8"))
    missed = [p for p in hard["pairs"] if p["split"] == "dev"
              and GUARD.check(p["query"], p["stored"]) is None]
    assert not missed
    rewordings = json.loads((ROOT / "benchmarks/data/rewordings.json").read_text("utf-8"))
    rejected = [(p, str(GUARD.check(p["query"], p["stored"]))) for p in rewordings["pairs"]
                if p["split"] == "dev" and GUARD.check(p["query"], p["stored"]) is not None]
    assert not rejected


def test_data_sets_have_the_promised_size_and_fields() -> None:
    hard = json.loads((ROOT / "benchmarks/data/hard_negatives.json").read_text("utf-8"))["pairs"]
    assert len(hard) >= 150
    assert all(set(p) == {"stored", "query", "category", "split"} for p in hard)
    assert {p["split"] for p in hard} == {"dev", "heldout"}
    rewordings = json.loads((ROOT / "benchmarks/data/rewordings.json").read_text("utf-8"))["pairs"]
    assert len(rewordings) >= 100
    assert len({(p["stored"], p["query"]) for p in rewordings}) == len(rewordings)


def test_explain_shows_both_readings_and_the_verdict() -> None:
    from semcache.guard import explain

    out = explain("Convert 5 miles to km", "Convert 5 km to miles")
    assert out["verdict"] == "direction: to km / miles vs km / to miles"
    assert out["query"].units == {"mile", "kilometer"}  # type: ignore[attr-defined]
