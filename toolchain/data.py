"""Labelled text tables (CSV, TSV, JSONL) → splits of texts and label ids, with clear errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .errors import DataError

csv.field_size_limit(1 << 24)


from .splits import Dataset, Split, carve_test, carve_validation, limit_samples  # noqa: E402,F401  (types re-exported)


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise DataError(f"{path}: unknown file type '{suffix}' (use .csv, .tsv or .jsonl)")


def read_table(path: str | Path) -> tuple[list[dict], list[str]]:
    """Rows as dicts of strings, and the column names; CRLF and a BOM are handled."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    fmt = _format_of(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (line {line}, byte {e.start}); re-save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not a JSON object per line ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            # Scalars become strings; lists and objects stay as parsed so that _read_split refuses them
            # as a text or a label instead of training on their JSON spelling.
            rows.append({str(k): ("" if v is None else v if isinstance(v, (str, list, dict)) else str(v)) for k, v in obj.items()})
        columns = list(dict.fromkeys(k for r in rows for k in r))
        return rows, columns
    delim = "\t" if fmt == "tsv" else ","
    # GLUE TSVs are unquoted and contain stray quote characters: never treat quotes specially there.
    reader = csv.reader(text.splitlines(), delimiter=delim, quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file (no header row)") from None
    header = [h.strip() for h in header]
    other = "," if delim == "\t" else "\t"
    if len(header) == 1 and other in header[0]:
        kind = "comma" if other == "," else "tab"
        raise DataError(f"{path}: looks {kind}-separated but is named {path.suffix}; rename it or fix the delimiter")
    if len(header) == 1:
        stray = next((d for d in (";", "|") if d in header[0]), None)
        if stray:
            raise DataError(f"{path}: header {header[0]!r} looks {stray!r}-separated; use ',' (.csv) or tab (.tsv) as the delimiter")
    rows = []
    for n, rec in enumerate(reader, 2):
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != len(header):
            raise DataError(f"{path}:{n}: {len(rec)} fields where the header has {len(header)} (wrong delimiter or unquoted separator?)")
        rows.append(dict(zip(header, rec)))
    return rows, header


def pick_column(columns: list[str], candidates: list[str], path: Path, role: str) -> str:
    for c in candidates:
        if c in columns:
            return c
    names = " or ".join(repr(c) for c in candidates)
    raise DataError(f"{path}: no {role} column {names}; columns are {columns} (set --{role.replace(' ', '-')}-column)")


def _read_split(path: Path, name: str, cfg) -> tuple[list, list[str]]:
    rows, columns = read_table(path)
    if not rows:
        raise DataError(f"{path}: the {name} split is empty")
    tcol = pick_column(columns, cfg.text_column, path, "text")
    pcol = pick_column(columns, cfg.text_pair_column, path, "text pair") if cfg.text_pair_column else None
    lcol = pick_column(columns, cfg.label_column, path, "label")
    texts, labels = [], []
    for n, r in enumerate(rows, 1 if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else 2):
        a = _text_cell(r.get(tcol, ""), path, n, tcol)
        if pcol:
            texts.append((a, _text_cell(r.get(pcol, ""), path, n, pcol)))
        else:
            texts.append(a)
        lab = r.get(lcol, "")
        if not isinstance(lab, str):
            raise DataError(f"{path}: row {n}: label column '{lcol}' holds a JSON {type(lab).__name__}; labels must be strings or integers")
        lab = lab.strip()
        if not lab:
            raise DataError(f"{path}: row {n}: label column '{lcol}' is empty")
        labels.append(lab)
    # A label column with (almost) one value per row is a text column picked by mistake.
    distinct = len(set(labels))
    if distinct >= 20 and distinct > 0.9 * len(labels):
        raise DataError(f"{path}: label column '{lcol}' has {distinct} distinct values in {len(labels)} rows; "
                         f"it looks like text, not labels (check --label-column / --text-column)")
    return texts, labels


def _text_cell(value, path: Path, n: int, col: str) -> str:
    """A non-empty string cell; JSON numbers, lists or objects in a text column are refused, not stringified."""
    if not isinstance(value, str):
        raise DataError(f"{path}: row {n}: column '{col}' holds a JSON {type(value).__name__} {json.dumps(value)[:40]}; text must be a string")
    if not value or not value.strip():
        raise DataError(f"{path}: row {n}: column '{col}' is empty; remove the row or fill it in")
    return value.strip()


def _label_order(raw: list[str]) -> list[str]:
    uniq = set(raw)
    try:
        return sorted(uniq, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(uniq)


def _to_ids(raw: list[str], order: list[str], path: Path, name: str) -> list[int]:
    index = {lab: i for i, lab in enumerate(order)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        where = "not in data.labels" if name == "train" else "not seen in training"
        raise DataError(f"{path}: {name} has label(s) {shown} {where} (known: {order})")
    return [index[r] for r in raw]


SAMPLE_DIR = Path(__file__).resolve().parent.parent / "samples" / "support_intents_v2"


def default_train_file() -> Path:
    """The quickstart data shipped in samples/ next to the package."""
    return SAMPLE_DIR / "train.csv"


def load_dataset(cfg, seed: int) -> Dataset:
    """Read train/validation/test as the recipe's [data] section says; carve validation if absent."""
    if getattr(cfg, "task", "") == "token-classification":
        from .tasks.token import load_token_dataset

        return load_token_dataset(cfg, seed)
    train_path = Path(cfg.train) if cfg.train else default_train_file()
    tr_texts, tr_raw = _read_split(train_path, "train", cfg)
    labels = [str(x) for x in cfg.labels] if cfg.labels else _label_order(tr_raw)
    if len(set(tr_raw)) < 2:
        raise DataError(f"{train_path}: training data has a single class ({tr_raw[0]!r}); a classifier needs at least two")
    tr_ids = _to_ids(tr_raw, labels, train_path, "train")
    train = Split("train", tr_texts, tr_ids, str(train_path))
    notes = []
    train, test = carve_test(train, cfg, seed, train_path, notes)
    validation_file = cfg.validation or ("" if cfg.train else str(SAMPLE_DIR / "dev.csv"))
    if validation_file:
        vp = Path(validation_file)
        v_texts, v_raw = _read_split(vp, "validation", cfg)
        validation = Split("validation", v_texts, _to_ids(v_raw, labels, vp, "validation"), str(vp))
    else:
        train, validation, note = carve_validation(train, cfg.validation_fraction, seed, train_path)
        notes.append(note)
    if cfg.test:
        tp = Path(cfg.test)
        t_texts, t_raw = _read_split(tp, "test", cfg)
        test = Split("test", t_texts, _to_ids(t_raw, labels, tp, "test"), str(tp))
    train, validation, test = limit_samples(train, validation, test, cfg, seed, notes)
    if len(set(train.labels)) < 2:
        raise DataError(f"{train_path}: the training subset has a single class; raise data.max_train_samples")
    return Dataset(train, validation, test, labels, bool(cfg.text_pair_column), notes)
