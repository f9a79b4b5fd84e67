"""Trade-off plots: labels do not overlap, the accuracy axis shows the spread, the original is the reference."""
import pytest

from toolchain import report
from toolchain.compress import report as compress_report
from toolchain.plots import accuracy_limits, label_overlaps


def _lat(name, fmt, prec, ms, mb):
    return {"name": name, "format": fmt, "precision": prec, "p50_ms": ms, "p90_ms": ms, "p99_ms": ms,
            "bytes": mb * 1e6, "seq_len": 128, "iters": 50, "load_avg_1m": 1.0}


# The case from issue 14: int8 pair and fp32 pair at nearly the same latency and size.
LATENCY = [_lat("original", "pytorch", "fp32", 27.8, 90.9), _lat("executorch-fp32", "executorch", "fp32", 11.9, 62.5),
           _lat("executorch-int8", "executorch", "int8", 5.8, 15.9), _lat("onnx-fp32", "onnx", "fp32", 9.6, 62.6),
           _lat("onnx-int8", "onnx", "int8", 5.7, 15.8)]


def _summary(accs):
    return {"latency": LATENCY, "artifacts": [{"artifact": n, "file": f"model-{n}.x", "accuracy": a,
                                               "original_accuracy": accs["original"]} for n, a in accs.items() if n != "original"]}


@pytest.mark.parametrize("accs", [
    {"original": 1.0, "executorch-fp32": 1.0, "executorch-int8": 1.0, "onnx-fp32": 1.0, "onnx-int8": 1.0},
    {"original": 0.9467, "executorch-fp32": 0.9033, "executorch-int8": 0.8983, "onnx-fp32": 0.9033, "onnx-int8": 0.9017},
], ids=["equal", "spread"])
def test_accuracy_latency_labels_do_not_overlap(accs, tmp_path):
    fig = report.accuracy_latency_figure(_summary(accs))
    texts = fig.toolformer_labels
    assert len(texts) == 5 and label_overlaps(fig, texts) == []
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    ys = [100 * a for a in accs.values()]
    assert lo < min(ys) and hi > max(ys) and 2.0 <= hi - lo <= 3 * max(2.0, max(ys) - min(ys))
    assert hi <= 101.0  # no 96-104% window around equal values
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "original (reference)" in legend and any(t.endswith(" MB") for t in legend)
    out = report.write_accuracy_latency_plot(_summary(accs), tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compression_plot_labels_do_not_overlap(tmp_path):
    def row(stage, mb, z, gf, acc):
        return {"stage": stage, "fp32_bytes": mb * 1e6, "zstd_bytes": z * 1e6, "flops": gf * 1e9, "val_accuracy": acc, "seq_len": 64}

    rep = {"stages": [row("original", 90.9, 84, 1.397, 0.8429), row("truncate 3 layers", 69.8, 64, 0.699, None),
                      row("distil", 69.8, 64, 0.699, 0.8200), row("prune heads", 59.2, 55, 0.349, 0.8119),
                      row("sparsity 0.3", 59.2, 40, 0.349, 0.8085), row("vocab", 29.0, 20, 0.349, 0.8085)]}
    fig = compress_report.figure(rep)
    assert len(fig.toolformer_labels) == 5 and label_overlaps(fig, fig.toolformer_labels) == []
    assert "40.00 zstd" in fig.toolformer_labels[3].get_text()  # sparsity shows in the archive size
    compress_report.plot(rep, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_accuracy_limits_show_the_spread():
    lo, hi = accuracy_limits([90.0, 90.0])
    assert lo < 90 < hi and hi - lo >= 2.0
    lo, hi = accuracy_limits([80.0, 95.0])
    assert lo < 80 and 95 < hi <= 100 + 0.3 * 15 and hi - lo < 25
    lo, hi = accuracy_limits([100.0, 100.0])
    assert lo < 100 < hi <= 100.5


def _search_report(points):
    trials = [{"number": k, "params": {"num_layers": 1 + k % 3}, "latency_ms": ms, "val_accuracy": acc, "bytes": b,
               "pareto": k % 2 == 0, "qualified": acc >= 0.5} for k, (ms, acc, b) in enumerate(points)]
    return {"judged_by": {"target": "pytorch", "precision": "fp32", "seq_len": 32}, "trials": trials, "winner": 0,
            "original": {"latency_ms": 1.0, "val_accuracy": 0.55, "bytes": 2e6}, "threshold": 0.5, "min_retention": 0.9}


def test_crowded_search_plot_places_labels_apart_and_the_same_every_time():
    """CI once failed on two search trials at nearly one point: adjustText ran against a clock (3 s), so a
    loaded machine stopped it early. Now a fixed number of its steps, then a deterministic separation."""
    from toolchain.search import figure

    crowd = [(0.50, 0.50, 4e5), (0.50, 0.50, 4e5), (0.505, 0.501, 5e5), (0.51, 0.499, 3e5), (0.50, 0.52, 6e5),
             (0.52, 0.50, 4e5), (0.49, 0.505, 2e5), (0.97, 0.51, 8e5)]
    placed = []
    for _ in range(2):
        fig = figure(_search_report(crowd))
        assert len(fig.toolformer_labels) == 9 and label_overlaps(fig, fig.toolformer_labels) == []
        placed.append([t.get_position() for t in fig.toolformer_labels])
    assert placed[0] == placed[1]
