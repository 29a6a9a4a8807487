"""Small charts drawn with Pillow: a line chart, a box plot, a scatter plot and a feedback session's map, as PNG.

Enough for score curves, benchmark summaries and session maps without a plotting
dependency. Every function writes to a temporary name beside `path` and renames it into
place, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from noise2art.errors import InvalidArgument
from noise2art.files import atomic_write

# Colour-blind-safe palette (Okabe & Ito), one colour per series / group.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

# A map's point kinds (`FeedbackMap.kinds`), in the palette's first three colours.
_MAP_COLOURS = {"path": PALETTE[0], "chosen": PALETTE[1], "candidate": PALETTE[2]}

_SIZE = (640, 400)
_MARGIN = dict(left=70, right=20, top=36, bottom=50)


def line_chart(
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = _SIZE,
) -> Path:
    """Draw each series as a line over x = 0, 1, 2, ... and save a PNG.

    Args:
        series: name -> y values (non-finite values break the line).
        path: where to write the PNG.
        title, xlabel, ylabel: text on the chart.

    Returns:
        The path written.
    """
    values = [v for ys in series.values() for v in ys if _finite(v)]
    if not values:
        raise InvalidArgument("series", "need at least one finite value to plot")
    n = max(len(ys) for ys in series.values())
    image, draw, font, box = _canvas(size, title, xlabel, ylabel)
    lo, hi = _padded_range(min(values), max(values))
    _axes(draw, font, box, (0, max(n - 1, 1)), (lo, hi), integer_x=True)

    def point(x: float, y: float) -> tuple[float, float]:
        return _to_pixel(box, x, y, (0, max(n - 1, 1)), (lo, hi))

    for k, (name, ys) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        segment: list[tuple[float, float]] = []
        for x, y in enumerate(ys):
            if _finite(y):
                segment.append(point(x, y))
            else:
                _polyline(draw, segment, colour)
                segment = []
        _polyline(draw, segment, colour)
    _legend(draw, font, box, list(series))
    return _save(image, path)


def box_plot(
    groups: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    title: str = "",
    ylabel: str = "",
    size: tuple[int, int] = _SIZE,
) -> Path:
    """One box per group (quartiles, median line, whiskers at 1.5 IQR, outlier dots); save a PNG.

    Returns:
        The path written.
    """
    clean = {name: sorted(v for v in vals if _finite(v)) for name, vals in groups.items()}
    values = [v for vals in clean.values() for v in vals]
    if not values:
        raise InvalidArgument("groups", "need at least one finite value to plot")
    image, draw, font, box = _canvas(size, title, "", ylabel)
    lo, hi = _padded_range(min(values), max(values))
    k = len(clean)
    _axes(draw, font, box, None, (lo, hi))
    left, top, right, bottom = box
    slot = (right - left) / k
    for j, (name, vals) in enumerate(clean.items()):
        cx = left + slot * (j + 0.5)
        label_w = draw.textlength(name, font=font)
        draw.text((cx - label_w / 2, bottom + 6), name, fill="black", font=font)
        if not vals:
            continue
        colour = PALETTE[j % len(PALETTE)]
        q1, med, q3 = quartiles(vals)
        iqr = q3 - q1
        low_w = min((v for v in vals if v >= q1 - 1.5 * iqr), default=q1)
        high_w = max((v for v in vals if v <= q3 + 1.5 * iqr), default=q3)
        half = min(slot * 0.3, 40)

        def y(v: float) -> float:
            return _to_pixel(box, 0, v, (0, 1), (lo, hi))[1]

        draw.line([(cx, y(low_w)), (cx, y(q1))], fill="black")
        draw.line([(cx, y(q3)), (cx, y(high_w))], fill="black")
        for w in (low_w, high_w):
            draw.line([(cx - half / 2, y(w)), (cx + half / 2, y(w))], fill="black")
        draw.rectangle([cx - half, y(q3), cx + half, y(q1)], outline="black", fill=colour)
        draw.line([(cx - half, y(med)), (cx + half, y(med))], fill="black", width=2)
        for v in vals:
            if v < low_w or v > high_w:
                draw.ellipse([cx - 2, y(v) - 2, cx + 2, y(v) + 2], outline="black")
    return _save(image, path)


def scatter_plot(
    points: Mapping[str, tuple[float, float]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = _SIZE,
) -> Path:
    """One labelled dot per named `(x, y)` point (a trade-off between two measures); save a PNG.

    Returns:
        The path written.
    """
    clean = {name: xy for name, xy in points.items() if _finite(xy[0]) and _finite(xy[1])}
    if not clean:
        raise InvalidArgument("points", "need at least one finite point to plot")
    image, draw, font, box = _canvas(size, title, xlabel, ylabel)
    xr = _padded_range(min(x for x, _ in clean.values()), max(x for x, _ in clean.values()))
    yr = _padded_range(min(y for _, y in clean.values()), max(y for _, y in clean.values()))
    _axes(draw, font, box, xr, yr)
    for k, (name, (x, y)) in enumerate(clean.items()):
        px, py = _to_pixel(box, x, y, xr, yr)
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=PALETTE[k % len(PALETTE)], outline="black")
        width = draw.textlength(name, font=font)
        # Labels go right of their dot, or left of it where they would run off the chart.
        tx = px + 7 if px + 7 + width <= box[2] else px - 7 - width
        draw.text((tx, py - 7), name, fill="black", font=font)
    return _save(image, path)


def save_map_png(fmap, path: str | os.PathLike, size: int = 512) -> Path:
    """Draw a feedback session's map: coloured points, labels, arrows along the path of ``C``.

    Args:
        fmap: a `noise2art.methods.feedback.FeedbackMap` (``points [N, 2]``, ``labels``,
            ``kinds``, ``arrows``, ``explained``); taken by its fields, so this module
            imports nothing from the methods above it.
        path: the ``.png`` to write.
        size: the square image's side in pixels, >= 64.

    Returns:
        The path written.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 64:
        raise InvalidArgument("size", f"must be an integer >= 64, got {size!r}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InvalidArgument("path", f"the map is written as .png, got '{path.name}'")
    pts = np.asarray(fmap.points, dtype=np.float64).reshape(-1, 2)
    margin = 40
    lo, hi = pts.min(axis=0) if len(pts) else np.zeros(2), pts.max(axis=0) if len(pts) else np.ones(2)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)

    def to_px(p):
        q = (p - lo) / span
        return margin + q[0] * (size - 2 * margin), size - margin - q[1] * (size - 2 * margin)

    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((6, 4), f"PCA: {fmap.explained[0]:.0%} / {fmap.explained[1]:.0%} of the variance", fill=(90, 90, 90),
              font=font)
    for a, b in fmap.arrows:
        (x0, y0), (x1, y1) = to_px(pts[a]), to_px(pts[b])
        draw.line([(x0, y0), (x1, y1)], fill=_MAP_COLOURS["path"], width=2)
        angle = math.atan2(y1 - y0, x1 - x0)
        for side in (-0.45, 0.45):
            draw.line([(x1, y1), (x1 - 10 * math.cos(angle + side), y1 - 10 * math.sin(angle + side))],
                      fill=_MAP_COLOURS["path"], width=2)
    for p, label, kind in zip(pts, fmap.labels, fmap.kinds):
        x, y = to_px(p)
        r = 6 if label == "current" else 4
        colour = _MAP_COLOURS.get(kind, (0, 0, 0))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0) if label == "current" else None)
        draw.text((x + 6, y - 6), label, fill=(0, 0, 0), font=font)
    return _save(image, path)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """`(q1, median, q3)` by linear interpolation (numpy's default method)."""
    vals = sorted(values)
    if not vals:
        raise InvalidArgument("values", "need at least one value")

    def q(p: float) -> float:
        pos = p * (len(vals) - 1)
        i = math.floor(pos)
        j = min(i + 1, len(vals) - 1)
        return vals[i] + (vals[j] - vals[i]) * (pos - i)

    return q(0.25), q(0.5), q(0.75)


# -- drawing helpers ---------------------------------------------------------------------


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _canvas(size, title, xlabel, ylabel):
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    w, h = size
    box = (_MARGIN["left"], _MARGIN["top"], w - _MARGIN["right"], h - _MARGIN["bottom"])
    if title:
        draw.text(((w - draw.textlength(title, font=font)) / 2, 10), title, fill="black", font=font)
    if xlabel:
        draw.text(((box[0] + box[2] - draw.textlength(xlabel, font=font)) / 2, h - 18), xlabel, fill="black", font=font)
    if ylabel:
        # Pillow has no rotated text on a draw: render the label on its own strip and rotate that.
        tw = int(draw.textlength(ylabel, font=font)) + 4
        strip = Image.new("RGB", (tw, 14), "white")
        ImageDraw.Draw(strip).text((2, 0), ylabel, fill="black", font=font)
        strip = strip.rotate(90, expand=True)
        image.paste(strip, (4, int((box[1] + box[3] - strip.height) / 2)))
    return image, draw, font, box


def _padded_range(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.05 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _to_pixel(box, x, y, xr, yr):
    left, top, right, bottom = box
    px = left + (x - xr[0]) / (xr[1] - xr[0]) * (right - left)
    py = bottom - (y - yr[0]) / (yr[1] - yr[0]) * (bottom - top)
    return px, py


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k spacing) inside [lo, hi]."""
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return out


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _axes(draw, font, box, xr, yr, integer_x: bool = False) -> None:
    left, top, right, bottom = box
    draw.rectangle([left, top, right, bottom], outline="black")
    for v in _ticks(*yr):
        _, py = _to_pixel(box, 0, v, (0, 1), yr)
        draw.line([(left - 4, py), (left, py)], fill="black")
        draw.line([(left + 1, py), (right - 1, py)], fill="#e6e6e6")
        label = _fmt(v)
        draw.text((left - 6 - draw.textlength(label, font=font), py - 6), label, fill="black", font=font)
    if xr is None:
        return
    for v in _ticks(*xr):
        if integer_x and v != int(v):
            continue
        px, _ = _to_pixel(box, v, 0, xr, (0, 1))
        draw.line([(px, bottom), (px, bottom + 4)], fill="black")
        label = str(int(v)) if integer_x else _fmt(v)
        draw.text((px - draw.textlength(label, font=font) / 2, bottom + 6), label, fill="black", font=font)


def _polyline(draw, points, colour) -> None:
    if len(points) == 1:
        x, y = points[0]
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    elif points:
        draw.line(points, fill=colour, width=2)


def _legend(draw, font, box, names: list[str]) -> None:
    if len(names) < 2:
        return
    left, top, right, _ = box
    x, y = left + 8, top + 6
    for k, name in enumerate(names):
        colour = PALETTE[k % len(PALETTE)]
        draw.line([(x, y + 6), (x + 16, y + 6)], fill=colour, width=3)
        draw.text((x + 20, y), name, fill="black", font=font)
        y += 14


def _save(image: Image.Image, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
