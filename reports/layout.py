"""The one figure helper of the report: `save` checks a figure's layout and writes its PNG.

Every figure of every section goes through `save`, which returns the path with the layout problems found
(`layout_problems`, measured with the renderer's bounding boxes at the saving resolution):

- a text (title, label, tick label, legend entry, point label) that sticks out of the canvas;
- two point labels (gid `POINT_LABEL`, drawn by `place_labels`) that overlap;
- an empty panel: an axes without any line, marker, bar or image (hidden ones included);
- a legend drawn over a data point (a marker of a line or a scatter point inside the axes);
- an axis offset text (a "1e12" beside the ticks instead of a unit in the label).

Matplotlib's Agg backend and the seaborn theme are set here, once for every figure.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")

DPI = 110
POINT_LABEL = "point-label"
"""gid of the text of every point label drawn by `place_labels` (the overlap check looks for it)."""


@dataclass(frozen=True)
class Drawn:
    """A saved figure: its PNG and the layout problems found before saving (empty when clean)."""
    path: Path
    problems: tuple[str, ...] = ()


def save(fig, figdir: Path, name: str, layout: bool = True) -> Drawn:
    """Lay out (``tight_layout`` unless ``layout`` is False), check, write ``<figdir>/<name>.png`` and close."""
    figdir = Path(figdir)
    figdir.mkdir(parents=True, exist_ok=True)
    path = figdir / f"{name}.png"
    if layout:
        fig.tight_layout()
    problems = tuple(layout_problems(fig))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Drawn(path, problems)


def drawn_texts(fig) -> list:
    """Draw ``fig`` at the saving resolution and return every non-empty text artist actually drawn
    (titles, axis and tick labels, legend entries, annotations; not ticks outside the view)."""
    drawn, orig = [], Text.draw

    def record(self, renderer):
        orig(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)

    fig.set_dpi(DPI)
    Text.draw = record
    try:
        fig.canvas.draw()
    finally:
        Text.draw = orig
    return drawn


def layout_problems(fig) -> list[str]:
    """Every problem listed in the module docstring, one line each."""
    texts = drawn_texts(fig)
    r = fig.canvas.get_renderer()
    W, H = fig.bbox.width, fig.bbox.height
    out = []
    for t in texts:
        b = Text.get_window_extent(t, r)
        if b.x0 < -1 or b.y0 < -1 or b.x1 > W + 1 or b.y1 > H + 1:
            out.append(f"clipped: {t.get_text()!r} at x {b.x0:.0f}..{b.x1:.0f}, y {b.y0:.0f}..{b.y1:.0f} "
                       f"of {W:.0f} x {H:.0f}")
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == POINT_LABEL and t.get_visible()]
        boxes = [Text.get_window_extent(t, r) for t in labels]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if boxes[i].overlaps(boxes[j]):
                    out.append(f"overlap: {labels[i].get_text()!r} and {labels[j].get_text()!r}")
    return out + _empty_panels(fig) + _legends_over_data(fig, r) + _offset_texts(fig)


def _empty_panels(fig) -> list[str]:
    out = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or not (ax.lines or ax.collections or ax.patches or ax.images):
            out.append(f"empty panel: axes {i} ({ax.get_title()!r})")
    return out


def _data_points(ax) -> np.ndarray:
    """Display coordinates of the markers of ``ax`` (line markers and scatter points) inside its box."""
    pts = [line.get_transform().transform(line.get_xydata()) for line in ax.lines
           if line.get_visible() and line.get_marker() not in (None, "", "None", " ") and len(line.get_xydata())]
    pts += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
            if isinstance(c, PathCollection) and c.get_visible() and len(c.get_offsets())]
    if not pts:
        return np.empty((0, 2))
    p = np.concatenate(pts)
    box = ax.bbox
    return p[(p[:, 0] >= box.x0) & (p[:, 0] <= box.x1) & (p[:, 1] >= box.y0) & (p[:, 1] <= box.y1)]


def _legends_over_data(fig, r) -> list[str]:
    legends = [lg for lg in [*(ax.get_legend() for ax in fig.axes), *fig.legends] if lg is not None]
    out = []
    for lg in legends:
        b = lg.get_window_extent(r)
        for ax in fig.axes:
            p = _data_points(ax)
            inside = (p[:, 0] > b.x0) & (p[:, 0] < b.x1) & (p[:, 1] > b.y0) & (p[:, 1] < b.y1)
            if inside.any():
                out.append(f"legend over data: {int(inside.sum())} point(s) of axes {ax.get_title()!r}")
    return out


def _offset_texts(fig) -> list[str]:
    return [f"offset text {axis.get_offset_text().get_text()!r} on axes {ax.get_title()!r} (put the unit in the label)"
            for ax in fig.axes if ax.get_visible() for axis in (ax.xaxis, ax.yaxis)
            if axis.get_visible() and axis.get_offset_text().get_visible() and axis.get_offset_text().get_text().strip()]


def place_labels(ax, xs, ys, labels, fontsize: float = 8, avoid=()) -> None:
    """Label each point (data coordinates) without overlaps: for each point in turn, try offsets around it
    at growing distances and keep the first whose box stays inside the axes and clear of every label and
    marker placed so far (and of the extra points ``avoid``, pairs (x, y)); far offsets get a thin leader
    line. Call after the figure's layout is final."""
    fig = ax.figure
    fig.set_dpi(DPI)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axbox = ax.get_window_extent(r)
    pts = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
    extra = ax.transData.transform(np.asarray(list(avoid), float).reshape(-1, 2)) if len(avoid) else np.empty((0, 2))
    pad = 4.0
    markers = [Bbox.from_extents(px - pad, py - pad, px + pad, py + pad) for px, py in pts]
    others = [Bbox.from_extents(px - pad, py - pad, px + pad, py + pad) for px, py in extra]
    taken: list = []
    for i in np.argsort(-pts[:, 1]):
        blocked = taken + others + [m for k, m in enumerate(markers) if k != i]
        dx, dy, ha, va, dist = _clear_offset(ax, r, axbox, (xs[i], ys[i]), labels[i], fontsize, blocked)
        arrow = {"arrowstyle": "-", "lw": 0.5, "color": "0.45", "shrinkA": 0, "shrinkB": 2} if dist > 10 else None
        t = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx * dist, dy * dist), textcoords="offset points",
                        ha=ha, va=va, fontsize=fontsize, arrowprops=arrow)
        t.set_gid(POINT_LABEL)
        t.update_positions(r)
        taken.append(Text.get_window_extent(t, r))


_DIRECTIONS = [(1, 1, "left", "bottom"), (1, -1, "left", "top"), (-1, 1, "right", "bottom"),
               (-1, -1, "right", "top"), (0, 1, "center", "bottom"), (0, -1, "center", "top"),
               (1, 0, "left", "center"), (-1, 0, "right", "center")]


def _clear_offset(ax, r, axbox, xy, label, fontsize, blocked) -> tuple:
    """(dx, dy, ha, va, distance) of the first offset whose label box lies inside ``axbox`` and clear of every
    box in ``blocked``; the nearest spot when none is (`layout_problems` then reports the overlap)."""
    for dist in (4, 10, 18, 28, 40, 55):
        for dx, dy, ha, va in _DIRECTIONS:
            t = ax.annotate(label, xy, xytext=(dx * dist, dy * dist), textcoords="offset points",
                            ha=ha, va=va, fontsize=fontsize)
            t.update_positions(r)
            b = Text.get_window_extent(t, r)
            t.remove()
            inside = b.x0 >= axbox.x0 and b.x1 <= axbox.x1 and b.y0 >= axbox.y0 and b.y1 <= axbox.y1
            if inside and not any(b.overlaps(o) for o in blocked):
                return dx, dy, ha, va, dist
    return 1, 1, "left", "bottom", 4
