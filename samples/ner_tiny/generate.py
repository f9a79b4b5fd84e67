"""Writes train.conll and dev.jsonl: a tiny synthetic NER sample (CoNLL-2003 tag set, IOB2) for tests.

Hand-written templates and names, filled with a fixed seed; rerun to regenerate the same files.
"""
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTITIES = {
    "PER": [["Angela", "Merkel"], ["Peter", "Blackburn"], ["Maria", "Schmidt"], ["John", "Smith"], ["Ana", "Lopez"],
            ["Kenji", "Watanabe"], ["Fatima", "Okafor"], ["Lars", "Jensen"], ["Nina"], ["Omar"]],
    "ORG": [["Siemens"], ["Reuters"], ["European", "Commission"], ["Deutsche", "Bank"], ["United", "Nations"],
            ["Volkswagen"], ["Ajax"], ["Toyota", "Motor"]],
    "LOC": [["Erlangen"], ["Berlin"], ["Brussels"], ["New", "York"], ["Tokyo"], ["Lagos"], ["Copenhagen"], ["Munich"], ["Madrid"]],
    "MISC": [["German"], ["British"], ["Japanese"], ["Olympic"], ["Euro"], ["Danish"], ["World", "Cup"]],
}
TEMPLATES = [
    "{PER} visited the {ORG} plant in {LOC} .",
    "{PER} said on Monday that {ORG} would open an office in {LOC} .",
    "The {MISC} minister met {PER} in {LOC} .",
    "{ORG} shares rose 3 percent in {LOC} , {PER} told reporters .",
    "In {LOC} , {PER} joined {ORG} as chief executive .",
    "{PER} ( {ORG} ) won the {MISC} title .",
    "Officials from {ORG} arrived in {LOC} late on Friday .",
    "{MISC} exports to {LOC} fell sharply last year .",
    "\" We will not give up , \" {PER} said .",
    "Prices were unchanged .",
]


def fill(rng, template):
    words, tags = [], []
    for tok in template.split(" "):
        if tok.startswith("{") and tok.endswith("}"):
            typ = tok[1:-1]
            for i, w in enumerate(rng.choice(ENTITIES[typ])):
                words.append(w)
                tags.append(("B-" if i == 0 else "I-") + typ)
        else:
            words.append(tok)
            tags.append("O")
    return words, tags


def main():
    rng = random.Random(16)
    train = [fill(rng, rng.choice(TEMPLATES)) for _ in range(120)]
    dev = [fill(rng, rng.choice(TEMPLATES)) for _ in range(40)]
    with open(HERE / "train.conll", "w", encoding="utf-8") as f:
        f.write("-DOCSTART- O\n\n")
        for i, (w, t) in enumerate(train):
            if i == 60:
                f.write("-DOCSTART- O\n\n")
            f.writelines(f"{a}\t{b}\n" for a, b in zip(w, t))
            f.write("\n")
    with open(HERE / "dev.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"words": w, "tags": t}) + "\n" for w, t in dev)


if __name__ == "__main__":
    main()
