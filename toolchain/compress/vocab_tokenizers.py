"""What vocabulary pruning must keep, per tokenizer kind, so that kept text tokenizes to the same pieces.

- WordPiece: greedy longest match over a subset finds the same pieces for a word whose pieces were
  all kept (the old behaviour; nothing extra is needed).
- BPE: a word's pieces are built by applying merges in rank order. Keeping every kept token's merge
  tree (the parts of each merge that produces it, recursively) and exactly the merges whose parts and
  result are all kept, in their old order, makes every merge the old run applied still available and
  still the lowest-ranked applicable one, so the run is identical. The base symbols (the 256 byte
  symbols of a byte-level BPE, the single characters otherwise, `<0xNN>` for byte fallback) are kept
  so that any text still tokenizes (into smaller pieces) without an unknown token.
- Unigram: Viterbi picks the highest-scoring segmentation. A subset that contains the old best keeps
  it best (scores are kept as they are, never renormalised). Every single-character piece (`▁`
  included) is kept, so the lattice adds [unk] nodes at the same places, and the lowest-scored piece
  is kept, so the unknown-token penalty (min score - 10 in `tokenizers`) does not move.

Other kinds (WordLevel, or BPE with dropout, whose segmentation is random) are refused with a reason.
`check_same_pieces` then proves the claim on the corpus itself before anything is shipped.
"""
from __future__ import annotations

import re

from ..errors import CompressError

KINDS = ("WordPiece", "BPE", "Unigram")
_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def kind(tj: dict, path) -> str:
    """The tokenizer model type, or a one-line refusal where pruning it would not be sound."""
    model = tj.get("model") or {}
    k = model.get("type")
    if k not in KINDS:
        raise CompressError(f"{path}: --prune-vocab supports WordPiece, BPE and Unigram tokenizers; this one is {k} "
                         "(no proof that a subset tokenizes kept text the same)")
    if k == "BPE" and model.get("dropout"):
        raise CompressError(f"{path}: --prune-vocab cannot prune a BPE tokenizer with dropout {model['dropout']}: "
                         "its segmentation is random, so no subset is guaranteed to give the same pieces")
    return k


def token_ids(tj: dict) -> dict:
    """token → id of the tokenizer model's vocabulary (Unigram stores a list of [piece, score])."""
    v = tj["model"]["vocab"]
    if isinstance(v, list):
        return {p[0]: i for i, p in enumerate(v)}
    return {t: int(i) for t, i in v.items()}


def _merges(tj: dict) -> list[tuple[str, str]]:
    # tokenizers writes merges as "a b" strings (old files) or [a, b] pairs (0.20+).
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in tj["model"].get("merges", [])]


def _uses_byte_level(tj: dict) -> bool:
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel":
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(tj.get("pre_tokenizer"))


def required_ids(tj: dict) -> set[int]:
    """Ids that soundness needs whatever the corpus: base symbols (BPE), single characters and the lowest score (Unigram)."""
    model, ids = tj["model"], token_ids(tj)
    k = model["type"]
    out: set[int] = set()
    if k == "BPE":
        if _uses_byte_level(tj):
            from tokenizers.pre_tokenizers import ByteLevel

            base = set(ByteLevel.alphabet())
            out |= {i for t, i in ids.items() if t in base}
        else:
            pre, suf = model.get("continuing_subword_prefix") or "", model.get("end_of_word_suffix") or ""
            for t, i in ids.items():
                core = t[len(pre):] if pre and t.startswith(pre) else t
                core = core[: -len(suf)] if suf and core.endswith(suf) else core
                if len(core) == 1:
                    out.add(i)
        if model.get("byte_fallback"):
            out |= {i for t, i in ids.items() if _BYTE_FALLBACK.match(t)}
    elif k == "Unigram":
        vocab = model["vocab"]
        out |= {i for i, (p, _) in enumerate(vocab) if len(p) == 1}
        if vocab:
            out.add(min(range(len(vocab)), key=lambda i: vocab[i][1]))
        if model.get("byte_fallback"):
            out |= {i for i, (p, _) in enumerate(vocab) if _BYTE_FALLBACK.match(p)}
    return out


def closure(tj: dict, keep: set[int]) -> set[int]:
    """BPE: add the merge tree of every kept token (both parts of every merge that produces it)."""
    if tj["model"]["type"] != "BPE":
        return set(keep)
    ids = token_ids(tj)
    tokens = {i: t for t, i in ids.items()}
    makers: dict[str, list] = {}
    for a, b in _merges(tj):
        makers.setdefault(a + b, []).append((a, b))
    out, todo = set(keep), [tokens[i] for i in keep if i in tokens]
    while todo:
        t = todo.pop()
        for a, b in makers.get(t, ()):
            for part in (a, b):
                j = ids.get(part)
                if j is not None and j not in out:
                    out.add(j)
                    todo.append(part)
    return out


def renumber_model(tj: dict, new_of: dict) -> None:
    """Rewrite tj["model"] in place for the kept ids (`new_of`: old id → new id), keeping order, scores and merges."""
    model = tj["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [p for i, p in enumerate(model["vocab"]) if i in new_of]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_of[int(model["unk_id"])]
        return
    ids = token_ids(tj)
    kept = {t for t, i in ids.items() if i in new_of}
    model["vocab"] = {t: new_of[i] for t, i in sorted(ids.items(), key=lambda kv: kv[1]) if i in new_of}
    if model["type"] == "BPE":
        # A merge survives when it can fire on kept text: both parts and its result are kept (old rank order).
        raw = model.get("merges", [])
        model["merges"] = [m for m, (a, b) in zip(raw, _merges(tj)) if a in kept and b in kept and a + b in kept]


def check_same_pieces(old_tok, new_tok, texts: list, keep_old_ids: set[int], path) -> int:
    """Every corpus text whose old pieces were all kept must give the same pieces under the new tokenizer;
    returns how many texts were compared (raises, naming one text, otherwise)."""
    n = 0
    for i in range(0, len(texts), 2048):
        chunk = texts[i:i + 2048]
        for t, a, b in zip(chunk, old_tok.encode_batch(chunk), new_tok.encode_batch(chunk)):
            if not keep_old_ids.issuperset(a.ids):
                continue
            n += 1
            if a.tokens != b.tokens:
                raise CompressError(f"{path}: the pruned tokenizer splits {t!r} into {b.tokens} instead of {a.tokens}; "
                                 "refusing to prune this tokenizer's vocabulary")
    return n
