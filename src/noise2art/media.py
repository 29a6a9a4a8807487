"""Writing frame sequences: GIF, MP4, PNG frames, contact sheets, and a speed plot.

Every writer renders into a temporary name beside its target and renames it into place,
so an interrupted write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from noise2art.errors import InvalidArgument
from noise2art.files import temporary_name

__all__ = [
    "FORMATS",
    "check_fps",
    "parse_formats",
    "plot_speed",
    "to_frames",
    "upscale_for_video",
    "write_gif",
    "write_mp4",
    "write_png_frames",
    "write_sheet",
]

FORMATS = ("gif", "mp4", "png", "sheet")
MAX_FPS = 120.0


def parse_formats(values: str | Sequence[str] | None, default: Sequence[str] = ("gif",)) -> list[str]:
    """`["gif,mp4", "sheet"]` or `"gif,mp4"` -> `["gif", "mp4", "sheet"]` (order kept, duplicates dropped)."""
    if values is None:
        return list(default)
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in FORMATS:
                raise InvalidArgument("format", f"must be one of {', '.join(FORMATS)}, got '{name}'")
            if name not in out:
                out.append(name)
    if not out:
        raise InvalidArgument("format", f"name at least one of {', '.join(FORMATS)}")
    return out


def check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or not 0 < fps <= MAX_FPS:
        raise InvalidArgument("fps", f"must be a number in (0, {MAX_FPS:g}], got {fps!r}")
    return float(fps)


def to_frames(images: torch.Tensor | Sequence[Image.Image]) -> list[Image.Image]:
    """`[N, 3, H, W]` in [0, 1] (or PIL images) -> RGB PIL images, rounded as `engine.model.to_pil` does."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise InvalidArgument("images", f"expected [N, 3, H, W], got {list(images.shape)}")
        arr = images.detach().to("cpu", torch.float32).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        arr = (arr * 255).round().astype(np.uint8)
        return [Image.fromarray(a) for a in arr]
    frames = [im.convert("RGB") for im in images]
    if not frames:
        raise InvalidArgument("images", "need at least one frame")
    return frames


@contextmanager
def _atomic(path: Path):
    """Yield a temporary path beside `path` (same suffix, so encoders infer the format); rename on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_gif(frames: Sequence[Image.Image], path: str | os.PathLike, fps: float = 12.0, loop: bool = True) -> Path:
    """An animated GIF, ``1000 / fps`` ms per frame, looping forever unless ``loop=False``.

    GIF delays are whole centiseconds: fps above 50 play at about 50 in most viewers.
    Pillow merges identical consecutive frames into one longer frame, so the file may hold
    fewer frames than given while keeping the total duration.
    """
    frames = to_frames(frames)
    fps = check_fps(fps)
    path = Path(path)
    duration = max(20, int(round(1000.0 / fps)))
    with _atomic(path) as tmp:
        extra = {"loop": 0} if loop else {}
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration,
                       optimize=False, disposal=1, **extra)
    return path


def upscale_for_video(frame: Image.Image, min_side: int = 256) -> Image.Image:
    """Nearest-neighbour upscale by a whole factor to at least ``min_side`` px, then even sides.

    H.264 in yuv420p needs even width and height, and players show tiny videos badly;
    nearest keeps the pixels crisp (the embedded model's frames are 64 px).
    """
    w, h = frame.size
    factor = max(1, math.ceil(min_side / min(w, h)))
    if factor > 1:
        frame = frame.resize((w * factor, h * factor), Image.NEAREST)
    w, h = frame.size
    if w % 2 or h % 2:
        frame = frame.crop((0, 0, w - w % 2, h - h % 2)) if min(w, h) > 2 else frame.resize((w + w % 2, h + h % 2), Image.NEAREST)
    return frame


def write_mp4(frames: Sequence[Image.Image], path: str | os.PathLike, fps: float = 12.0, min_side: int = 256,
              quality: int = 8) -> Path:
    """An H.264 MP4 (yuv420p, playable everywhere) through imageio-ffmpeg's bundled ffmpeg.

    Frames smaller than ``min_side`` are upscaled (`upscale_for_video`). ``quality`` is
    imageio-ffmpeg's 0..10 scale (10 best).
    """
    import imageio_ffmpeg

    frames = [upscale_for_video(f, min_side) for f in to_frames(frames)]
    fps = check_fps(fps)
    if not isinstance(quality, int) or not 0 <= quality <= 10:
        raise InvalidArgument("quality", f"must be an integer in [0, 10], got {quality!r}")
    path = Path(path)
    w, h = frames[0].size
    if any(f.size != (w, h) for f in frames):
        raise InvalidArgument("images", "all frames of a video must have one size")
    with _atomic(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=quality, macro_block_size=2, ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        )
        writer.send(None)  # start the generator
        try:
            for f in frames:
                writer.send(np.ascontiguousarray(np.asarray(f, dtype=np.uint8)))
        finally:
            writer.close()
    return path


def write_png_frames(frames: Sequence[Image.Image], folder: str | os.PathLike, stem: str = "frame") -> list[Path]:
    """``folder/stem_0000.png``, ... one PNG per frame (each written atomically)."""
    frames = to_frames(frames)
    folder = Path(folder)
    width = max(4, len(str(len(frames) - 1)))
    paths = []
    for k, f in enumerate(frames):
        path = folder / f"{stem}_{k:0{width}d}.png"
        with _atomic(path) as tmp:
            f.save(tmp, format="PNG")
        paths.append(path)
    return paths


def write_sheet(frames: Sequence[Image.Image], path: str | os.PathLike, labels: Sequence[str] | None = None,
                cols: int | None = None) -> Path:
    """A contact sheet of all frames (`sheet.contact_sheet`), labels under each tile."""
    from noise2art.sheet import contact_sheet

    frames = to_frames(frames)
    path = Path(path)
    with _atomic(path) as tmp:
        contact_sheet(frames, cols=cols, labels=labels).save(tmp, format="PNG")
    return path


def plot_speed(alphas: Sequence[float], speeds: Sequence[float], *, threshold: float | None = None,
               jumps: Sequence[int] = (), basins: Sequence[tuple[float, float]] = (), title: str = "",
               size: tuple[int, int] = (640, 300)) -> Image.Image:
    """A line plot of speed over alpha, drawn with Pillow (no plotting library needed).

    Each step's speed is drawn at the midpoint of its alpha interval; jump steps are red,
    basins shaded green, the jump threshold dashed.

    Args:
        alphas: ``[N]`` sample alphas; ``speeds``: ``[N-1]`` per step.
        threshold: the jump threshold (a dashed line), if any.
        jumps: indices of jump steps.
        basins: ``(start, end)`` alpha intervals to shade.
    """
    a = [float(x) for x in alphas]
    v = [float(x) for x in speeds]
    if len(a) < 2 or len(v) != len(a) - 1:
        raise InvalidArgument("speeds", f"expected {max(len(a) - 1, 1)} speeds for {len(a)} alphas, got {len(v)}")
    W, H = size
    left, right, top, bottom = 56, 12, 22 if title else 10, 30
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, x1 = a[0], a[-1]
    vmax = max(max(v), threshold or 0.0) * 1.08 or 1.0

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (W - left - right)

    def py(y: float) -> float:
        return H - bottom - y / vmax * (H - top - bottom)

    for s, e in basins:
        draw.rectangle([px(s), top, px(e), H - bottom], fill=(226, 244, 226))
    # Axes, ticks and labels.
    draw.line([(left, top), (left, H - bottom), (W - right, H - bottom)], fill=(0, 0, 0))
    for k in range(5):
        x = x0 + (x1 - x0) * k / 4
        draw.line([(px(x), H - bottom), (px(x), H - bottom + 4)], fill=(0, 0, 0))
        draw.text((px(x) - 12, H - bottom + 6), f"{x:.2f}", fill=(0, 0, 0), font=font)
        y = vmax * k / 4
        draw.line([(left - 4, py(y)), (left, py(y))], fill=(0, 0, 0))
        draw.text((2, py(y) - 6), f"{y:.3g}", fill=(0, 0, 0), font=font)
    draw.text((W // 2 - 20, H - 12), "alpha", fill=(0, 0, 0), font=font)
    if title:
        draw.text((left, 4), title[:100], fill=(0, 0, 0), font=font)
    if threshold is not None:
        ty = py(threshold)
        x = float(left)
        while x < W - right:
            draw.line([(x, ty), (min(x + 6, W - right), ty)], fill=(120, 120, 120))
            x += 10
    mids = [(a[i] + a[i + 1]) / 2 for i in range(len(v))]
    points = [(px(m), py(s)) for m, s in zip(mids, v)]
    if len(points) > 1:
        draw.line(points, fill=(30, 80, 200), width=2)
    jump_set = set(int(j) for j in jumps)
    for i, (x, y) in enumerate(points):
        color = (220, 30, 30) if i in jump_set else (30, 80, 200)
        r = 3 if i in jump_set else 2
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    return img
