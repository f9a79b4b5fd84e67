"""Request parsing and response shapes: Open Inference Protocol (KServe V2) REST and the plain /v1/predict."""
from __future__ import annotations

import json
import math

import numpy as np

from .errors import ApiError

OUTPUTS = ("logits", "label")
TOKEN_TASK = "token-classification"
# A token-classification model's outputs: logits per tokenizer piece and each text's entities as a JSON string.
TOKEN_OUTPUTS = ("logits", "entities")


def output_specs(token: bool, num_labels: int) -> list[dict]:
    """The model metadata's outputs: (n, labels) logits and a label per text, or for a token model
    (n, pieces, tags) logits — pieces of the request's longest text, specials included — and entities."""
    if token:
        return [{"name": "logits", "datatype": "FP32", "shape": [-1, -1, num_labels]},
                {"name": "entities", "datatype": "BYTES", "shape": [-1]}]
    return [{"name": "logits", "datatype": "FP32", "shape": [-1, num_labels]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]}]


def parse_json(body: bytes):
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON ({e.msg if hasattr(e, 'msg') else 'not UTF-8'})") from None


def _flatten(data) -> list:
    out = []
    stack = [data]
    while stack:  # row-major flattening of nested lists, as the protocol allows
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(reversed(x))
        else:
            out.append(x)
    return out


def input_names(pair: bool) -> tuple:
    return ("text", "text_pair") if pair else ("text",)


def parse_infer(obj, pair: bool, token: bool = False) -> tuple[list, list | None, str | None]:
    """OIP infer request → (texts or (text, pair) tuples, requested output names or None, request id)."""
    if not isinstance(obj, dict):
        raise ApiError(400, "infer request must be a JSON object with 'inputs'")
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, "'inputs' must be a non-empty list of tensors")
    want = input_names(pair)
    tensors = {}
    for t in inputs:
        if not isinstance(t, dict):
            raise ApiError(400, "each input must be an object with name, shape, datatype and data")
        name = t.get("name")
        if name not in want:
            raise ApiError(400, f"unknown input {name!r}; this model takes {', '.join(want)}")
        if name in tensors:
            raise ApiError(400, f"input {name!r} is given twice")
        if t.get("datatype") != "BYTES":
            raise ApiError(400, f"input {name!r}: datatype must be BYTES (UTF-8 strings), got {t.get('datatype')!r}")
        if "parameters" in t and isinstance(t["parameters"], dict) and t["parameters"].get("binary_data_size") is not None:
            raise ApiError(400, "binary tensor data is not supported; send the strings in 'data'")
        shape, data = t.get("shape"), t.get("data")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ApiError(400, f"input {name!r}: shape must be a list of non-negative integers, e.g. [2]")
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise ApiError(400, f"input {name!r}: shape {shape} — expected [n] or [n, 1] (one string per text)")
        if not isinstance(data, list):
            raise ApiError(400, f"input {name!r}: data must be a list of strings")
        flat = _flatten(data)
        if math.prod(shape) != len(flat):
            raise ApiError(400, f"input {name!r}: shape {shape} holds {math.prod(shape)} elements but data has {len(flat)}")
        if not all(isinstance(x, str) for x in flat):
            raise ApiError(400, f"input {name!r}: every element of data must be a string")
        tensors[name] = flat
    missing = [n for n in want if n not in tensors]
    if missing:
        raise ApiError(400, f"missing input {missing[0]!r}; this model takes {', '.join(want)}")
    texts = tensors["text"]
    if pair:
        if len(tensors["text_pair"]) != len(texts):
            raise ApiError(400, f"'text' has {len(texts)} elements but 'text_pair' has {len(tensors['text_pair'])}")
        texts = list(zip(texts, tensors["text_pair"]))
    outputs = obj.get("outputs")
    names = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
            raise ApiError(400, "'outputs' must be a list of {\"name\": ...} objects")
        names = [o["name"] for o in outputs]
        known = TOKEN_OUTPUTS if token else OUTPUTS
        bad = [n for n in names if n not in known]
        if bad:
            raise ApiError(400, f"unknown output {bad[0]!r}; this model gives {', '.join(known)}")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ApiError(400, "'id' must be a string")
    return texts, names, rid


def parse_predict(obj, pair: bool) -> tuple[list, str | None]:
    """/v1/predict body → (texts or pairs, model name or None). Pairs: "text_pairs": [...] beside "texts"."""
    if not isinstance(obj, dict):
        raise ApiError(400, "request must be a JSON object like {\"texts\": [\"...\"]}")
    unknown = sorted(set(obj) - {"texts", "text_pairs", "model"})
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; expected texts, text_pairs, model")
    texts = obj.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "'texts' must be a list of strings")
    pairs = obj.get("text_pairs")
    if pair:
        if not isinstance(pairs, list) or not all(isinstance(t, str) for t in pairs):
            raise ApiError(400, "this model classifies sentence pairs: give 'text_pairs', a list of strings beside 'texts'")
        if len(pairs) != len(texts):
            raise ApiError(400, f"'texts' has {len(texts)} elements but 'text_pairs' has {len(pairs)}")
        texts = list(zip(texts, pairs))
    elif pairs is not None:
        raise ApiError(400, "this model classifies single texts; 'text_pairs' is not accepted")
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a string")
    return texts, model


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Probabilities exactly as runtime_py's Model.predict computes them (float64 softmax)."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def infer_response(name: str, version: str, rid: str | None, logits: np.ndarray, labels: list, wanted, truncated: int) -> dict:
    probs = softmax64(logits)
    outs = []
    if wanted is None or "logits" in wanted:
        outs.append({"name": "logits", "datatype": "FP32", "shape": [int(logits.shape[0]), int(logits.shape[1])],
                     "data": [float(v) for v in logits.reshape(-1)]})
    if wanted is None or "label" in wanted:
        outs.append({"name": "label", "datatype": "BYTES", "shape": [int(logits.shape[0])],
                     "data": [labels[int(i)] for i in probs.argmax(axis=1)]})
    resp = {"model_name": name, "model_version": version, "outputs": outs, "parameters": {"truncated_texts": truncated}}
    if rid is not None:
        resp["id"] = rid
    return resp


def predict_response(name: str, logits: np.ndarray, labels: list, truncated: int) -> dict:
    probs = softmax64(logits)
    preds = [{"label": labels[int(p.argmax())], "score": float(p.max())} for p in probs]
    return {"model": name, "predictions": preds, "truncated_texts": truncated}


def _finite(entities: list) -> list:
    """Entities with a NaN score (no word of theirs had a prediction) as null: JSON has no NaN."""
    return [{**e, "score": e["score"] if e["score"] == e["score"] else None} for e in entities]


def token_infer_response(name: str, version: str, rid: str | None, results: list, num_labels: int, wanted,
                         truncated: int) -> dict:
    """OIP answer of a token model from (entities, logits (pieces, tags)) per text: logits (n, L, tags) with L
    the longest text's pieces (rows past a text's own `sequence_lengths` are zeros), entities as JSON strings."""
    lengths = [int(lg.shape[0]) for _, lg in results]
    outs = []
    if wanted is None or "logits" in wanted:
        width = max(lengths, default=0)
        block = np.zeros((len(results), width, num_labels), dtype=np.float32)
        for i, (_, lg) in enumerate(results):
            block[i, :lg.shape[0]] = lg
        outs.append({"name": "logits", "datatype": "FP32", "shape": [len(results), width, num_labels],
                     "data": [float(v) for v in block.reshape(-1)]})
    if wanted is None or "entities" in wanted:
        outs.append({"name": "entities", "datatype": "BYTES", "shape": [len(results)],
                     "data": [json.dumps(_finite(ents), ensure_ascii=False) for ents, _ in results]})
    resp = {"model_name": name, "model_version": version, "outputs": outs,
            "parameters": {"truncated_texts": truncated, "sequence_lengths": lengths}}
    if rid is not None:
        resp["id"] = rid
    return resp


def entities_response(name: str, results: list, truncated: int) -> dict:
    """/v1/predict answer of a token model: one {"entities": [...]} per text, offsets into the text as sent."""
    return {"model": name, "predictions": [{"entities": _finite(ents)} for ents, _ in results], "truncated_texts": truncated}
