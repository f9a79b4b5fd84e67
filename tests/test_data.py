"""Data loading: formats, column alternatives, pairs, labels, carving, and the errors users hit."""
import json
from pathlib import Path

import pytest

from toolchain import recipe as R
from toolchain.data import load_dataset, read_table
from toolchain.errors import UsageError

SST2 = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sst2"


def cfg(**kw):
    return R.build({"data": kw}).data


def write(p: Path, text: str, newline="\n") -> Path:
    p.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return p


def test_csv_tsv_jsonl_and_crlf(tmp_path):
    rows_csv = write(tmp_path / "a.csv", 'text,label\n"hello, world",pos\nbad day,neg\nfine,pos\n', "\r\n")
    rows_tsv = write(tmp_path / "a.tsv", 'label\ttext\npos\tit\'s "quoted" here\nneg\tno\n')
    rows_jl = write(tmp_path / "a.jsonl", '{"text": "a b", "label": 1}\n\n{"text": "c", "label": 0}\n')
    assert read_table(rows_csv)[0][0] == {"text": "hello, world", "label": "pos"}
    assert read_table(rows_tsv)[0][0]["text"] == 'it\'s "quoted" here'
    assert read_table(rows_jl)[0][1] == {"text": "c", "label": "0"}


def test_string_labels_sorted_and_validation_carved(tmp_path):
    lines = "text,label\n" + "".join(f"row {i},{'b' if i % 2 else 'a'}\n" for i in range(40))
    d = load_dataset(cfg(train=str(write(tmp_path / "t.csv", lines)), validation_fraction=0.25), seed=3)
    assert d.labels == ["a", "b"] and len(d.validation) == 10 and len(d.train) == 30
    d2 = load_dataset(cfg(train=str(tmp_path / "t.csv"), validation_fraction=0.25), seed=3)
    assert d2.validation.texts == d.validation.texts  # seeded



def test_held_out_test_split_carved_from_train(tmp_path):
    """data.test_fraction: a seeded held-out split carved first, disjoint from train and validation, the same rows
    whether validation is carved or given; refused next to a data.test file."""
    lines = "text,label\n" + "".join(f"row {i},{'b' if i % 3 else 'a'}\n" for i in range(100))
    t = str(write(tmp_path / "t.csv", lines))
    v = str(write(tmp_path / "v.csv", "text,label\nx,a\ny,b\n"))
    d = load_dataset(cfg(train=t, test_fraction=0.2), seed=3)
    assert (len(d.train), len(d.validation), len(d.test)) == (72, 8, 20) and d.test.name == "test"
    assert not set(d.test.texts) & (set(d.train.texts) | set(d.validation.texts))
    assert any(n.startswith("test held out from train: 20 rows") for n in d.notes)
    given = load_dataset(cfg(train=t, validation=v, test_fraction=0.2), seed=3)
    assert given.test.texts == d.test.texts and len(given.train) == 80
    assert load_dataset(cfg(train=t, test_fraction=0.2), seed=4).test.texts != d.test.texts  # seeded
    assert load_dataset(cfg(train=t), seed=3).test is None
    with pytest.raises(UsageError, match="test_fraction carves a test split from train"):
        cfg(train=t, test=v, test_fraction=0.1)
    with pytest.raises(UsageError, match=r"test_fraction must be in \[0, 1\)"):
        cfg(test_fraction=1.0)

def test_integer_labels_sort_numerically_and_pairs(tmp_path):
    lines = "s1\ts2\tlabel\n" + "".join(f"a{i}\tb{i}\t{i % 11}\n" for i in range(44))
    d = load_dataset(cfg(train=str(write(tmp_path / "p.tsv", lines)), text_column="s1", text_pair_column="s2"), seed=0)
    assert d.labels[:3] == ["0", "1", "2"] and d.labels[-1] == "10"
    assert d.pair and isinstance(d.train.texts[0], tuple)


def test_unknown_label_in_validation_is_named(tmp_path):
    t = write(tmp_path / "t.csv", "text,label\na,x\nb,y\nc,x\n")
    v = write(tmp_path / "v.csv", "text,label\na,z\n")
    with pytest.raises(UsageError, match=r"v.csv.*'z' not seen in training"):
        load_dataset(cfg(train=str(t), validation=str(v)), seed=0)


@pytest.mark.parametrize("content,match", [
    ("text,label\n", "empty"),
    ("words,label\na,x\nb,y\n", "no text column 'text'"),
    ("text,label\na,x\nb,x\nc,x\n", "single class"),
    ("text,label\n  ,x\nb,y\n", "row 2: column 'text' is empty"),
])
def test_bad_training_files(tmp_path, content, match):
    with pytest.raises(UsageError, match=match):
        load_dataset(cfg(train=str(write(tmp_path / "t.csv", content))), seed=0)


def test_wrong_delimiter_and_encoding_and_missing(tmp_path):
    with pytest.raises(UsageError, match="tab-separated"):
        read_table(write(tmp_path / "t.csv", "text\tlabel\na\tb\n"))
    (tmp_path / "l.csv").write_bytes(b"text,label\n\xff\xfe,a\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_table(tmp_path / "l.csv")
    with pytest.raises(UsageError, match="no such file"):
        read_table(tmp_path / "missing.csv")


@pytest.mark.skipif(not SST2.is_dir(), reason="../shared/data/sst2 not present")
def test_sst2_loads_with_column_flags_only():
    d = load_dataset(cfg(train=str(SST2 / "train.tsv"), validation=str(SST2 / "dev.tsv"),
                         text_column=["sentence", "content"], max_train_samples=500), seed=0)
    assert d.labels == ["0", "1"] and len(d.validation) == 872 and len(d.train) == 500
    assert not any(t.endswith("\r") for t in d.validation.texts)
