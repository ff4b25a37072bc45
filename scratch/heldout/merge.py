"""Merge the hand-written parts (partNN.txt) into benchmarks/data/families_heldout.json and
pairs*.txt into attack_pairs_heldout.json. The parts are a plain line format so that
writing by hand needs no JSON quoting:

    # family-id | domain | kind [| dev_overlap]
    = intent-id | answer
    - phrasing (five per intent)
    U unrelated-id | question | answer          (in unrelated*.txt)
    P kind | stored | query                      (in pairs*.txt)

Nothing here writes a phrasing: it only parses, checks and counts."""
from __future__ import annotations

import collections
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "benchmarks" / "data"


def norm(t: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", t.casefold()).split())


def parse_families(path: Path) -> list[dict]:
    fams: list[dict] = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        tag, rest = line[0], line[1:].strip()
        if tag == "#":
            parts = [p.strip() for p in rest.split("|")]
            fam = {"id": parts[0], "domain": parts[1], "kind": parts[2], "intents": []}
            if len(parts) > 3 and parts[3] == "dev_overlap":
                fam["dev_overlap"] = True
            fams.append(fam)
        elif tag == "=":
            iid, answer = (p.strip() for p in rest.split("|", 1))
            fams[-1]["intents"].append({"id": iid, "answer": answer, "phrasings": []})
        elif tag == "-":
            fams[-1]["intents"][-1]["phrasings"].append(rest)
        else:
            sys.exit(f"{path.name}:{n}: bad line {raw!r}")
    return fams


def main() -> None:
    families: list[dict] = []
    for part in sorted(HERE.glob("part*.txt")):
        families += parse_families(part)
    unrelated = []
    for f in sorted(HERE.glob("unrelated*.txt")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.startswith("U "):
                uid, text, answer = (p.strip() for p in line[2:].split("|"))
                unrelated.append({"id": uid, "text": text, "answer": answer})
    pairs = []
    for f in sorted(HERE.glob("pairs*.txt")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.startswith("P "):
                kind, stored, query = (p.strip() for p in line[2:].split("|"))
                pairs.append({"stored": stored, "query": query, "kind": kind})
    problems = []
    owner: dict[str, str] = {}
    for fam in families:
        if not 2 <= len(fam["intents"]) <= 4:
            problems.append(f"{fam['id']}: {len(fam['intents'])} intents")
        for it in fam["intents"]:
            if len(it["phrasings"]) != 5:
                problems.append(f"{it['id']}: {len(it['phrasings'])} phrasings")
            for p in it["phrasings"]:
                k = norm(p)
                if k in owner and owner[k] != it["id"]:
                    problems.append(f"phrasing {p!r} in {owner[k]} and {it['id']}")
                elif k in owner:
                    problems.append(f"phrasing {p!r} twice in {it['id']}")
                owner[k] = it["id"]
    ids = [i["id"] for f in families for i in f["intents"]] + [u["id"] for u in unrelated]
    dup = [i for i, c in collections.Counter(ids).items() if c > 1]
    fdup = [i for i, c in collections.Counter(f["id"] for f in families).items() if c > 1]
    for u in unrelated:
        if norm(u["text"]) in owner:
            problems.append(f"unrelated {u['text']!r} is also {owner[norm(u['text'])]}")
    if dup or fdup:
        problems.append(f"duplicate ids {dup} {fdup}")
    for p in problems:
        print("PROBLEM", p)
    intents = sum(len(f["intents"]) for f in families)
    phr = intents * 5
    print(f"families {len(families)}  intents {intents}  phrasings {phr}  unrelated {len(unrelated)}"
          f"  pairs {len(pairs)}")
    print("intents per family", collections.Counter(len(f["intents"]) for f in families))
    print("family kinds", sorted(collections.Counter(f["kind"] for f in families).items()))
    print("domains", sorted(collections.Counter(f["domain"] for f in families).items()))
    print("pair kinds", sorted(collections.Counter(p["kind"] for p in pairs).items()))
    if "--write" in sys.argv and not problems:
        fdoc = {
            "description": DESCRIPTION_F,
            "provenance": PROVENANCE,
            "split": "heldout",
            "families": families,
            "unrelated": unrelated,
        }
        (DATA / "families_heldout.json").write_text(
            json.dumps(fdoc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        pdoc = {"description": DESCRIPTION_P, "provenance": PROVENANCE, "split": "heldout",
                "pairs": pairs}
        (DATA / "attack_pairs_heldout.json").write_text(
            json.dumps(pdoc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print("written")


PROVENANCE = ("written by hand for semcache (issue 22, third held-out part), no external source; "
              "written without looking at the semantic decision's code, its training script or "
              "the development splits, and never run through the cache to pick or drop items")
DESCRIPTION_F = (
    "Held-out labelled stream for the semantic decision of issue 22: families of 2-4 look-alike "
    "intents that need different answers, 5 phrasings per intent written the way users vary a "
    "question, plus unrelated single questions. No rule, lexicon, threshold or weight is tuned on "
    "this file; it is run once to report. Each family's `kind` names the difference between its "
    "intents; `dev_overlap: true` marks a family one of whose phrasings first collided with a "
    "development split (rewritten since), so figures can be given without those families.")
DESCRIPTION_P = (
    "Held-out attacker's pairs for issue 22: two questions that read alike but need different "
    "answers, with the kind of difference. Evaluated each pair in a fresh namespace at the "
    "defaults: store `stored`, ask `query`; a served answer is a failure. Nothing is tuned on it.")

if __name__ == "__main__":
    main()
