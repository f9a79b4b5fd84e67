"""Regenerates train.csv / dev.csv: a harder customer-support intent set, written from our own templates.

Twelve intents, several paraphrases each, near-miss wordings that borrow another intent's words
("no refund needed, I only want to know where the parcel is" is shipping, not refund), typos,
lower-case chat style, and label noise (a seeded share of training rows and a smaller share of dev
rows carry a neighbouring intent's label, as hand-labelled tickets do). No model separates it
perfectly, so the quickstart report shows what compression and int8 cost.

Run from the repository root: python samples/support_intents_v2/make_sample.py (seeded, deterministic).
"""
import csv
import random
from pathlib import Path

SEED = 14
TRAIN_PER_INTENT = 125
DEV_PER_INTENT = 50
TRAIN_NOISE = 0.06   # share of training rows relabelled to a neighbouring intent
DEV_NOISE = 0.02
HELD_OUT = 2         # paraphrase templates per intent (and near misses) never seen in training

SLOTS = {
    "item": ["package", "parcel", "order", "new phone", "headphones", "shoes", "jacket", "blender", "laptop",
             "book", "coffee machine", "phone case"],
    "plan": ["subscription", "premium plan", "annual plan", "family plan", "monthly membership", "pro account"],
    "amount": ["$19.99", "$49", "forty dollars", "$5.50", "120 euros", "$300", "twelve pounds"],
    "period": ["monthly", "last month's", "March", "quarterly", "yearly", "this week's"],
    "when": ["yesterday", "last week", "on Monday", "three days ago", "before the weekend", "two weeks ago", "this morning"],
    "place": ["Canada", "Germany", "my office", "a PO box", "Australia", "my parents' house", "Spain"],
    "device": ["iPhone", "Android phone", "tablet", "smart TV", "laptop", "work computer"],
    "action": ["upload a photo", "open settings", "check out", "play a video", "search for items", "save my changes",
               "open my order history", "scroll the feed"],
    "field": ["email address", "phone number", "username", "profile picture", "billing address", "display name"],
    "card": ["card", "credit card", "debit card", "PayPal", "bank transfer", "Apple Pay"],
}

# intent -> paraphrase templates. Neighbouring intents share vocabulary on purpose.
INTENTS = {
    "billing_question": [
        "why is there an extra fee on my {period} bill", "can you explain the charge of {amount} on my statement",
        "the invoice for {period} looks wrong", "I need a copy of my {period} invoice",
        "what is this {amount} payment from {when}", "I was charged twice for my {plan}",
        "my bill went up to {amount} without any notice", "which {card} did you bill for my {plan}",
        "do you add tax to the {amount} price", "the amount on my {period} statement does not match my order",
        "I do not recognise a charge of {amount}", "can I get a receipt for the {amount} I paid {when}",
    ],
    "payment_failed": [
        "my {card} keeps getting declined at checkout", "the payment of {amount} failed but I have money on my {card}",
        "checkout says payment could not be processed", "I cannot pay with my {card}, it says transaction error",
        "why was my {card} rejected {when}", "the {amount} payment did not go through",
        "I tried to pay three times and it fails every time", "payment failed for my {plan} renewal",
        "my {card} was declined even though the bank says it is fine", "it will not accept my {card} for {amount}",
        "the order did not complete because the payment bounced", "I keep getting payment declined on the {device}",
    ],
    "refund_request": [
        "I want a refund for my {item}", "the {item} arrived broken, I want my money back",
        "please refund the {amount} for the {item}", "I returned my {item} {when} but got no refund yet",
        "the refund for my {item} is still pending", "can I get my money back for the {plan} I never used",
        "I was charged for a {item} I returned, please refund it", "how long does a refund to my {card} take",
        "I would like to return the {item} and get reimbursed", "send the {amount} back to my {card} please",
        "what is your return policy for a {item}", "the {item} is not what I ordered, refund me",
    ],
    "cancel_subscription": [
        "please cancel my {plan}", "how do I stop my {plan} from renewing", "I want to end my {plan} before it renews",
        "turn off auto renewal on my {plan}", "I no longer need the {plan}, cancel it",
        "how can I unsubscribe from the {plan}", "stop charging me for the {plan}, I want out",
        "cancel the {plan} at the end of this period", "I tried to cancel my {plan} but the button is missing",
        "downgrade me from the {plan} to the free tier", "end my membership today please",
        "I do not want the {plan} anymore",
    ],
    "order_status": [
        "where is my {item}, it still has not arrived", "the tracking number for my {item} does not work",
        "my {item} was supposed to arrive {when}", "my {item} has been stuck in transit since {when}",
        "when will my {item} be dispatched", "has my {item} shipped yet", "can you tell me when my {item} will arrive",
        "the tracking page for my {item} has not updated since {when}", "how long does shipping to {place} take",
        "is my {item} on its way", "what is the delivery date for my {item}", "my {item} is late, where is it",
    ],
    "delivery_problem": [
        "the courier says my {item} was delivered but it is not here", "my {item} arrived damaged",
        "the box was open and the {item} was missing", "I received someone else's {item}",
        "the {item} was left outside in the rain", "the driver left my {item} at the wrong address",
        "half of my order is missing from the {item} box", "the {item} came crushed",
        "you delivered a {item} I never ordered", "the parcel arrived but it was empty",
        "my {item} was marked delivered {when} but I never got it", "the {item} was delivered to {place} by mistake",
    ],
    "change_order": [
        "can I change the delivery address for my {item} to {place}", "I want to add a {item} to my order",
        "please change the size of the {item} in my order", "can I swap the {item} for a different colour before it ships",
        "I made a mistake in my order, can I edit it", "remove the {item} from my order before it ships",
        "update the shipping address on my {item} order to {place}", "can I change my order to express delivery",
        "I need to change the quantity of my {item} order", "can I switch the {item} to a different model",
        "my order has the wrong address, please fix it before dispatch", "can I combine my two orders into one",
    ],
    "login_problem": [
        "I cannot log in to my account", "how do I reset my password", "my account got locked {when}",
        "the two factor code never reaches my phone", "the login page keeps saying invalid credentials",
        "I forgot which email I used to sign up", "the password reset link has expired",
        "I get signed out every time I open the {device} app", "someone else may have access to my account",
        "I cannot sign in since {when}", "my verification code does not work", "it says my account does not exist",
    ],
    "update_account": [
        "I want to change the {field} on my account", "how can I update my {field}",
        "please change my {field}, the old one is wrong", "where do I edit my {field}",
        "I moved, update my {field}", "can I merge two accounts into one", "I want to change my {field} to a new one",
        "how do I add a second {field}", "my {field} is shown wrong on my profile",
        "let me change the {field} linked to my account", "I need a different {field} on the account",
        "update my {field} and my {card} details please",
    ],
    "app_bug": [
        "the app crashes when I {action}", "I get an error code when I {action}", "the website is very slow {when}",
        "the {device} app will not open", "notifications stopped working on my {device}",
        "I cannot {action}, the button does nothing", "the page shows a blank screen when I {action}",
        "sync between my {device} and the web is broken", "the video keeps buffering on my {device}",
        "after the latest update I cannot {action}", "the app freezes every time I {action}",
        "images do not load on my {device}",
    ],
    "product_question": [
        "does the {item} come with a warranty", "is the {item} compatible with my {device}",
        "what colours does the {item} come in", "is the {item} in stock", "how big is the {item}",
        "does the {plan} include offline access", "can the {item} be used in {place}",
        "what is the difference between the {plan} and the free plan", "how much does the {item} cost",
        "when will the {item} be back in stock", "does the {item} need batteries",
        "is there a student discount on the {plan}",
    ],
    "complaint": [
        "your customer service is terrible", "I have waited {when} for an answer and nobody replies",
        "this is the third time my {item} has a problem, I am very unhappy", "I am disappointed with the {plan}",
        "the support agent was rude to me {when}", "I want to speak to a manager about my {item}",
        "your service has gone downhill", "nobody has answered my emails since {when}",
        "I have been a customer for years and this is unacceptable", "I want to file a formal complaint",
        "the quality of the {item} is awful", "I am never ordering from you again",
    ],
}

# Near misses: wording full of a neighbouring intent's words, labelled by what the writer wants.
NEAR_MISSES = {
    "order_status": ["no refund needed, I only want to know where my {item} is",
                     "I do not want to cancel, just tell me when the {item} arrives",
                     "the payment went through fine, but where is my {item}"],
    "refund_request": ["the {item} was delivered fine but I changed my mind, I want my money back",
                       "cancelling is not enough, I want the {amount} refunded",
                       "it is not a billing question, I just want a refund for the {item}"],
    "cancel_subscription": ["I do not need a refund, just cancel the {plan}",
                            "the app works fine but I want to cancel my {plan}",
                            "stop the {plan}, keep the money for this month"],
    "billing_question": ["the payment worked, I just do not understand the {amount} on my bill",
                         "I am not asking for a refund, what is the {amount} charge",
                         "my {card} was not declined, but why was I billed {amount}"],
    "payment_failed": ["I am trying to pay, not get a refund, but my {card} is declined",
                       "this is not about my bill, the checkout payment keeps failing",
                       "my login works but payment with my {card} fails"],
    "delivery_problem": ["tracking is fine, but the {item} came broken",
                         "it did arrive but the {item} was crushed, I do not need a refund yet",
                         "not late at all, but the wrong {item} was delivered"],
    "change_order": ["it has not shipped yet so please change the address to {place}",
                     "do not cancel the order, just change the {item} size",
                     "no refund, I want to edit my order instead"],
    "login_problem": ["I do not want to change my {field}, I just cannot log in",
                      "the app is not crashing, it just will not accept my password",
                      "I cannot sign in to update my {field}"],
    "update_account": ["I can log in fine, I just want to change my {field}",
                       "not a bug, I only need to update the {field}",
                       "no need to reset the password, just change my {field}"],
    "app_bug": ["my payment is fine but the app crashes when I {action}",
                "I can log in but then the app freezes when I {action}",
                "this is not a complaint, just a bug: the {device} app will not {action}"],
    "product_question": ["before I order, is the {item} compatible with my {device}",
                         "I do not have a problem, just a question about the {item}",
                         "not about my order, does the {plan} include offline access"],
    "complaint": ["forget the refund, I want to complain about how I was treated",
                  "the {item} finally arrived but your service was awful",
                  "I am not cancelling yet but I am very unhappy with your support"],
}

# Which intents a noisy label may come from (the labeller's plausible confusions).
NEIGHBOURS = {
    "billing_question": ["payment_failed", "refund_request"], "payment_failed": ["billing_question", "app_bug"],
    "refund_request": ["billing_question", "cancel_subscription", "delivery_problem"],
    "cancel_subscription": ["refund_request", "update_account"], "order_status": ["delivery_problem", "change_order"],
    "delivery_problem": ["order_status", "refund_request"], "change_order": ["order_status", "update_account"],
    "login_problem": ["update_account", "app_bug"], "update_account": ["login_problem", "change_order"],
    "app_bug": ["login_problem", "payment_failed"], "product_question": ["order_status", "complaint"],
    "complaint": ["refund_request", "product_question"],
}
OPENERS = ["", "", "", "", "hi, ", "hello, ", "please help, ", "quick question: ", "urgent: ", "hey, ",
           "good morning, ", "sorry to bother you, ", "so ", "um "]
CLOSERS = ["", "", "", "", " thanks", " please help", "!", "?", " asap", " thank you", " ty", " ...", " :("]


def fill(template, rng):
    out = template
    for key, values in SLOTS.items():
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", rng.choice(values), 1)
    return out


def typo(text, rng):
    """One dropped, doubled or swapped letter inside a random word (chat-style input)."""
    words = text.split(" ")
    i = rng.randrange(len(words))
    w = words[i]
    if len(w) < 4:
        return text
    j = rng.randrange(1, len(w) - 1)
    kind = rng.choice(["drop", "double", "swap"])
    if kind == "drop":
        w = w[:j] + w[j + 1:]
    elif kind == "double":
        w = w[:j] + w[j] + w[j:]
    else:
        w = w[:j - 1] + w[j] + w[j - 1] + w[j + 1:]
    words[i] = w
    return " ".join(words)


def sentence(intent, rng, split):
    pool = NEAR_MISSES[intent] if rng.random() < 0.15 else INTENTS[intent]
    if split == "train":
        pool = pool[:-HELD_OUT]   # the last paraphrases of each intent appear in dev only
    s = (rng.choice(OPENERS) + fill(rng.choice(pool), rng) + rng.choice(CLOSERS)).strip()
    if rng.random() < 0.15:
        s = typo(s, rng)
    if rng.random() < 0.3:
        return s.lower()
    return s[0].upper() + s[1:]


def main():
    rng = random.Random(SEED)
    rows = {"train": [], "dev": []}
    used = set()   # no sentence twice, in either split
    for intent in INTENTS:
        for split, n, noise in (("dev", DEV_PER_INTENT, DEV_NOISE), ("train", TRAIN_PER_INTENT, TRAIN_NOISE)):
            part = []
            while len(part) < n:
                s = sentence(intent, rng, split)
                if s not in used:
                    used.add(s)
                    part.append(s)
            for s in part:
                label = rng.choice(NEIGHBOURS[intent]) if rng.random() < noise else intent
                rows[split].append((s, label))
    here = Path(__file__).parent
    for split, items in rows.items():
        rng.shuffle(items)
        with open(here / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(items)
        print(f"{split}: {len(items)} rows")


if __name__ == "__main__":
    main()
