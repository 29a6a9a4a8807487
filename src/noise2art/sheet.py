"""Contact sheets: many images in one grid PNG, optionally captioned."""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont


def contact_sheet(images: Sequence[Image.Image], cols: int | None = None, labels: Sequence[str] | None = None,
                  pad: int = 2, label_height: int = 12, background=(255, 255, 255)) -> Image.Image:
    """Arrange images (all one size) in a grid; `labels` are drawn under each tile, clipped to its width."""
    if not images:
        raise ValueError("images: need at least one image for a contact sheet")
    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    w, h = images[0].size
    lh = label_height if labels else 0
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + lh + pad) + pad), background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, im in enumerate(images):
        x = pad + (k % cols) * (w + pad)
        y = pad + (k // cols) * (h + lh + pad)
        sheet.paste(im.convert("RGB"), (x, y))
        if labels:
            text = str(labels[k])
            # Clip the label to the tile: measure and shorten until it fits.
            while text and draw.textlength(text, font=font) > w:
                text = text[:-1]
            draw.text((x, y + h), text, fill=(0, 0, 0), font=font)
    return sheet
