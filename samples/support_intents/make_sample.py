"""Regenerates train.csv / dev.csv: customer-support requests by intent, written from our own templates.

Run from the repository root: python samples/support_intents/make_sample.py (seeded, deterministic).
"""
import csv
import random
from pathlib import Path

INTENTS = {
    "billing": (
        ["I was charged twice for {thing}", "why is there an extra fee on my {period} bill",
         "my card was billed {amount} but I expected less", "can you explain the charge of {amount} on my statement",
         "please update the credit card on file for {thing}", "the invoice for {period} looks wrong",
         "I need a copy of my {period} invoice", "how do I change my payment method",
         "you billed me after I cancelled {thing}", "what is this {amount} payment from yesterday"],
        {"thing": ["my subscription", "the premium plan", "my order", "the annual plan", "one purchase"],
         "period": ["monthly", "last month's", "March", "quarterly", "yearly"],
         "amount": ["$19.99", "$49", "forty dollars", "$5.50", "120 euros"]},
    ),
    "shipping": (
        ["where is my {item}, it still has not arrived", "the tracking number for my {item} does not work",
         "my {item} was supposed to arrive {when}", "can I change the delivery address for my {item}",
         "how long does shipping to {place} take", "the courier says my {item} was delivered but it is not here",
         "is express delivery available to {place}", "my {item} has been stuck in transit since {when}",
         "can you ship my {item} faster", "when will my {item} be dispatched"],
        {"item": ["package", "parcel", "order", "new phone", "headphones", "shoes"],
         "when": ["yesterday", "last week", "on Monday", "three days ago", "before the weekend"],
         "place": ["Canada", "Germany", "my office", "a PO box", "Australia"]},
    ),
    "account": (
        ["I cannot log in to my account {detail}", "how do I reset my password {detail}",
         "I want to change the email address on my account", "my account got locked {detail}",
         "please delete my account and all my data", "the two factor code never reaches my phone",
         "someone else may have access to my account", "how can I update my username",
         "I forgot which email I used to sign up", "the login page keeps saying invalid credentials {detail}"],
        {"detail": ["since this morning", "after the update", "on my laptop", "even with the right password", "again"]},
    ),
    "refund": (
        ["I want a refund for my {item}", "how do I return a {state} {item}",
         "the {item} arrived {state}, I want my money back", "can I exchange my {item} for another size",
         "I returned my {item} {when} but got no refund yet", "what is your return policy for a {item}",
         "please cancel my order and refund me", "the refund for my {item} is still pending",
         "I received the wrong {item} and need to send it back", "can I get store credit instead of a refund"],
        {"item": ["jacket", "blender", "order", "laptop", "book", "pair of shoes"],
         "state": ["damaged", "broken", "unused", "defective", "opened"],
         "when": ["two weeks ago", "last month", "on Friday", "ten days ago"]},
    ),
    "technical": (
        ["the app crashes when I {action}", "I get an error code when I {action}",
         "the website is very slow {when}", "the {device} app will not open {when}",
         "notifications stopped working on my {device}", "I cannot {action}, the button does nothing",
         "the page shows a blank screen when I {action}", "sync between my {device} and the web is broken",
         "the video keeps buffering on my {device}", "after the latest update I cannot {action}"],
        {"action": ["upload a photo", "open settings", "check out", "play a video", "search for items", "save my changes"],
         "when": ["today", "since the update", "every evening", "on wifi", "right now"],
         "device": ["iPhone", "Android", "tablet", "smart TV", "laptop"]},
    ),
}
OPENERS = ["", "", "", "hi, ", "hello, ", "please help, ", "quick question: ", "urgent: ", "hey there, "]
CLOSERS = ["", "", "", " thanks", " please help", "!", "?", " asap", " thank you so much"]


def fill(template, slots, rng):
    out = template
    for key, values in slots.items():
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", rng.choice(values), 1)
    return out


def main():
    rng = random.Random(7)
    rows = {"train": [], "dev": []}
    for intent, (templates, slots) in INTENTS.items():
        seen = set()
        while len(seen) < 96:
            t = rng.choice(templates)
            s = (rng.choice(OPENERS) + fill(t, slots, rng) + rng.choice(CLOSERS)).strip()
            seen.add(s[0].upper() + s[1:])
        items = sorted(seen)
        rng.shuffle(items)
        rows["dev"] += [(s, intent) for s in items[:16]]
        rows["train"] += [(s, intent) for s in items[16:]]
    here = Path(__file__).parent
    for split, items in rows.items():
        rng.shuffle(items)
        with open(here / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(items)


if __name__ == "__main__":
    main()
