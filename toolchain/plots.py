"""One style for every trade-off plot (build report, compression report): accuracy against a cost.

- the original is the reference: a black star with dotted guide lines through it, so every other
  point reads as "cheaper/dearer, better/worse than the original";
- marker area is proportional to size (or FLOPs), with a key of round sizes;
- labels are placed by adjustText so none overlaps another label or a marker, with a thin leader line;
- the accuracy axis spans the data with padding (at least `min_span` points), never a fixed 0-100
  nor matplotlib's 96-104% window around equal values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

COLORS = {"pytorch": "#444444", "executorch": "#1f77b4", "onnx": "#ff7f0e", "stage": "#2ca02c"}
MARKERS = {"fp32": "s", "fp16": "D", "int8": "o"}
MAX_AREA = 900.0  # points^2 of the largest marker
ADJUST_STEPS = 400  # adjustText iterations (deterministic; separate() then guarantees no label overlaps)


@dataclass
class Point:
    label: str
    x: float            # the cost: latency (ms) or size (MB)
    y: float            # accuracy, %
    size: float         # what marker area encodes (bytes or FLOPs), same unit for all points
    color: str = COLORS["stage"]
    marker: str = "o"
    reference: bool = False  # the original


def accuracy_limits(values, min_span: float = 2.0, top: float = 100.0) -> tuple[float, float]:
    """y limits that show the spread: data range plus 25% padding, at least `min_span` wide, capped near `top`."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, min_span)
    pad = 0.25 * span
    mid = (lo + hi) / 2
    lo_lim, hi_lim = min(lo - pad, mid - span / 2 - pad), max(hi + pad, mid + span / 2 + pad)
    if hi_lim > top:  # accuracy stops at 100%: shift the window down, leave room for a label above
        shift = hi_lim - max(top + 0.2 * span, hi + 0.2 * span)
        lo_lim, hi_lim = lo_lim - shift, hi_lim - shift
    return max(lo_lim, 0.0), hi_lim


def _area(size: float, biggest: float) -> float:
    return 40.0 + MAX_AREA * (size / biggest if biggest > 0 else 0.0)


def _radius_pt(p: "Point", biggest: float) -> float:
    """A marker's drawn radius in points (area in points^2; the reference star is drawn larger)."""
    return math.sqrt(_area(p.size, biggest) * (2.2 if p.reference else 1.0)) / 2


def _round_keys(biggest: float, unit: float) -> list[float]:
    """Two or three round key sizes below the biggest point (in `unit`s)."""
    top = biggest / unit
    if top <= 0:
        return []
    mag = 10 ** math.floor(math.log10(top))
    steps = [s * mag for s in (1, 2, 5, 10)]
    top_key = max(s for s in steps if s <= top) if any(s <= top for s in steps) else top
    keys = sorted({top_key, top_key / 2, top_key / 5} if top_key / 5 >= 0.1 * top else {top_key, top_key / 2})
    return [k * unit for k in keys if k > 0]


def tradeoff(ax, points: list[Point], *, xlabel: str, ylabel: str = "validation accuracy, %", log_x: bool = False,
             size_unit: float = 1e6, size_name: str = "MB", path_line: bool = False, y_include: tuple = ()):
    """Draw `points` on `ax` in the house style; returns the label Text objects (placed without overlap).
    `y_include`: accuracies kept in view besides the points' (a threshold line the caller draws)."""
    from adjustText import adjust_text

    biggest = max(p.size for p in points)
    ref = next((p for p in points if p.reference), None)
    if path_line:  # stages in order: the path compression took
        ax.plot([p.x for p in points], [p.y for p in points], color="#999999", lw=1, zorder=1)
    markers = []
    for p in points:
        sc = ax.scatter([p.x], [p.y], s=_area(p.size, biggest), c=p.color, marker="*" if p.reference else p.marker,
                        alpha=0.85, edgecolors="black", linewidths=0.6, zorder=3 if not p.reference else 4)
        markers.append(sc)
    if ref is not None:
        ax.axhline(ref.y, ls=":", color="black", lw=0.9, zorder=2)
        ax.axvline(ref.x, ls=":", color="black", lw=0.9, zorder=2)
    if log_x:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    xs = [p.x for p in points]
    lo, hi = min(xs), max(xs)
    if log_x:
        ax.set_xlim(lo / 1.6, hi * 1.6)
    else:
        span = max(hi - lo, 0.1 * max(hi, 1e-9))
        ax.set_xlim(max(0.0, lo - 0.2 * span), hi + 0.2 * span)
    ax.set_ylim(*accuracy_limits([p.y for p in points] + list(y_include)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    # Start each label above or below its point: within a group of points close in x, the highest
    # label goes up and the lowest down (ties alternate in x order); then adjustText separates them
    # from each other and from the points.
    y0, y1 = ax.get_ylim()
    fig = ax.figure
    px_per_data = ax.get_window_extent().height / (y1 - y0)

    def off(p):  # clear of the marker's own radius (area in points^2) plus a small gap, in data units
        return (_radius_pt(p, biggest) + 5) * fig.dpi / 72 / px_per_data
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x_range = (tx(max(xs)) - tx(min(xs))) or 1.0
    order = sorted(range(len(points)), key=lambda i: points[i].x)
    groups, cur = [], [order[0]]
    for i in order[1:]:
        if tx(points[i].x) - tx(points[cur[-1]].x) < 0.1 * x_range:
            cur.append(i)
        else:
            groups.append(cur)
            cur = [i]
    groups.append(cur)
    up = {}
    for g in groups:
        ranked = sorted(g, key=lambda i: (-points[i].y, points[i].x))
        for k, i in enumerate(ranked):
            up[i] = k % 2 == 0 if len(g) > 2 else (k == 0)
    texts = [None] * len(points)
    for i, p in enumerate(points):
        u = up[i] or p.reference
        texts[i] = ax.text(p.x, p.y + (off(p) if u else -off(p)), p.label, fontsize=8, zorder=5, ha="center",
                           va="bottom" if u else "top", fontweight="bold" if p.reference else "normal")
    # A fixed number of adjustText steps, not a time limit: the same figure on a slow or loaded machine
    # (a 3 s limit ran 6,700 steps idle and far fewer under load, and left labels overlapping there).
    adjust_text(texts, x=[p.x for p in points], y=[p.y for p in points], ax=ax, expand=(1.2, 1.5),
                force_text=(0.3, 0.6), force_static=(0.4, 0.8), iter_lim=ADJUST_STEPS)
    for t, p in zip(texts, points):
        t.toolformer_target = (p.x, p.y)  # finish() separates labels and draws leader lines on the final layout
        t.toolformer_radius_px = _radius_pt(p, biggest) * fig.dpi / 72
    # Key: marker area for round sizes, plus the reference.
    from matplotlib.lines import Line2D

    handles = [ax.scatter([], [], s=_area(k, biggest), c="white", edgecolors="black", linewidths=0.6,
                          label=f"{k / size_unit:g} {size_name}") for k in _round_keys(biggest, size_unit)]
    if ref is not None:
        handles.append(Line2D([], [], ls=":", color="black", marker="*", markersize=10, label=ref.label.split("\n")[0] + " (reference)"))
    return texts, handles


def finish(fig, ax, handles: list, texts: list, area_means: str):
    """The house legend (right of the axes; marker area = `area_means`), tight layout, labels pulled apart
    where they still overlap and their leader lines, and the labels kept on `fig.toolformer_labels`
    for label_overlaps; returns `fig`."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, labelspacing=1.3,
              borderpad=0.8, title=f"marker area = {area_means}", title_fontsize=8)
    fig.tight_layout()
    separate(fig, ax, texts)
    _leaders(fig, ax, texts)
    fig.toolformer_labels = texts
    return fig


def separate(fig, ax, texts, gap_px: float = 2.0, rounds: int = 300):
    """Move labels vertically until no two drawn boxes overlap and, as far as that allows, none covers a
    marker: for two overlapping labels the higher goes up and the lower down by half the overlap (plus
    `gap_px`); a label on a marker moves off it, away from the marker's centre. Deterministic, and run
    after the final layout, so what the tests measure is what the PNG shows."""
    renderer = fig.canvas.get_renderer()
    to_data = ax.transData.inverted()
    markers = [(ax.transData.transform(t.toolformer_target), t.toolformer_radius_px) for t in texts
               if getattr(t, "toolformer_target", None) is not None]

    def shift(t, dy):
        x, y = ax.transData.transform(t.get_position())
        t.set_position(tuple(to_data.transform((x, y + dy))))

    def clash(boxes):
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 + gap_px and b.y0 < a.y1 + gap_px:
                    return i, j
        return None

    def settle_labels():
        for _ in range(rounds):
            boxes = [t.get_window_extent(renderer) for t in texts]
            pair = clash(boxes)
            if pair is None:
                return True
            i, j = pair
            a, b = boxes[i], boxes[j]
            upper, lower = (i, j) if (a.y0 + a.y1, -i) >= (b.y0 + b.y1, -j) else (j, i)
            dy = (min(a.y1, b.y1) - max(a.y0, b.y0) + gap_px) / 2 + 0.5
            shift(texts[upper], dy)
            shift(texts[lower], -dy)
        return False

    for _ in range(rounds):
        if not settle_labels():
            break
        moved = False
        for t in texts:
            box = t.get_window_extent(renderer)
            for (mx, my), r in markers:
                if box.x0 < mx + r and mx - r < box.x1 and box.y0 < my + r and my - r < box.y1:
                    up = (box.y0 + box.y1) / 2 >= my
                    shift(t, (my + r + gap_px - box.y0) if up else (my - r - gap_px - box.y1))
                    moved = True
                    break
        if not moved:
            return
    settle_labels()  # labels never overlap one another, whatever the markers left


def _leaders(fig, ax, texts, min_px: float = 5.0):
    """A thin line from each label to its point where the label sits away from it."""
    from matplotlib.patches import FancyArrowPatch

    renderer = fig.canvas.get_renderer()
    for t in texts:
        target = getattr(t, "toolformer_target", None)
        if target is None:
            continue
        box = t.get_window_extent(renderer)
        tx, ty = ax.transData.transform(target)
        dx = max(box.x0 - tx, 0.0, tx - box.x1)
        dy = max(box.y0 - ty, 0.0, ty - box.y1)
        if max(dx, dy) >= min_px:
            ax.add_patch(FancyArrowPatch(posA=t.get_position(), posB=target, patchA=t, transform=ax.transData,
                                         arrowstyle="-", color="#777777", lw=0.6, zorder=2))


def label_overlaps(fig, texts) -> list[tuple[str, str]]:
    """Pairs of labels whose drawn boxes intersect (the tests assert this is empty)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    out = []
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if boxes[i][1].overlaps(boxes[j][1]):
                out.append((boxes[i][0], boxes[j][0]))
    return out
