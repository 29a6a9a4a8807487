"""Generation parameters inside PNG files.

Each image carries every parameter three ways: one text chunk per parameter, a
`noise2art` chunk holding them as JSON (read back by `noise2art info` and
`generate --from`), and a `parameters` chunk in the infotext format other Stable
Diffusion tools read (prompt; `Negative prompt: ...`; `Steps: .., Sampler: .., ...`).
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from PIL import Image, PngImagePlugin

from noise2art.errors import InvalidArgument
from noise2art.files import atomic_write

# Our scheduler names -> the sampler names of the infotext format.
SAMPLER_NAMES = {
    "ddim": "DDIM", "ddpm": "DDPM", "euler": "Euler", "euler-a": "Euler a", "heun": "Heun",
    "dpm++2m": "DPM++ 2M", "dpm++2m-karras": "DPM++ 2M Karras", "lms": "LMS", "pndm": "PLMS", "unipc": "UniPC",
}


def _sampler_of_class(class_name: str) -> str:
    """The infotext sampler name of a diffusers scheduler class (the folder's own scheduler)."""
    from noise2art.engine.schedulers import SCHEDULERS

    for name, spec in SCHEDULERS.items():
        if spec.class_name == class_name:
            return SAMPLER_NAMES[name]
    return class_name


@dataclass
class GenerationParams:
    """Everything needed to make an image again."""

    prompt: str
    negative: str
    seed: int
    steps: int
    guidance: float
    scheduler: str
    width: int
    height: int
    model: str
    version: str
    embedding_hash: str
    embedding_file: str = ""  # set when the prompt came from an embedding artifact
    # Seeds that shared this image's UNet batch. Float results can depend on the batch a
    # sample ran in, so bit-exact reproduction re-runs the same batch.
    batch_seeds: list = field(default_factory=list)
    # The denoiser's precision: "model" (the model's dtype as loaded, and every image
    # written before this field existed) or "bf16" (`Model.sample`'s precision).
    precision: str = "model"
    # The diffusers class that ran; with scheduler "default" (the model folder's own
    # scheduler config) it is the only name the sampler has.
    scheduler_class: str = ""
    # Set when `generate --from` changed some stored settings: "IMAGE.png (steps, seed)".
    derived_from: str = ""
    # A search result's place in its stream (`methods.index`): kind, stream id, idx, and for
    # like / between / beyond the anchors and position, for a directed query the concept and
    # weight. Its noise is then not the seed's own, so `generate --from` refuses it.
    stream: dict = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings, *, prompt: str, negative: str, seed: int, model: str, version: str,
                      embedding_hash: str, embedding_file: str = "", batch_seeds=(), derived_from: str = "",
                      stream: dict | None = None):
        """The record of one image sampled with `settings` (an `engine.settings.SampleSettings`).

        When a student UNet ran (`settings.unet`, a preview), the record names the student as
        the model: loading it by that name draws the same image again."""
        model = getattr(settings, "unet", "") or model
        return cls(prompt=prompt, negative=negative, seed=seed, steps=settings.steps, guidance=settings.guidance,
                   scheduler=settings.scheduler_label, width=settings.width, height=settings.height, model=model,
                   version=version, embedding_hash=embedding_hash, embedding_file=embedding_file,
                   batch_seeds=list(batch_seeds), precision=settings.precision,
                   scheduler_class=settings.scheduler_class, derived_from=derived_from, stream=dict(stream or {}))

    def infotext(self) -> str:
        lines = [self.prompt]
        if self.negative:
            lines.append(f"Negative prompt: {self.negative}")
        sampler = SAMPLER_NAMES.get(self.scheduler) or _sampler_of_class(self.scheduler_class) or self.scheduler
        lines.append(
            f"Steps: {self.steps}, Sampler: {sampler}, CFG scale: {self.guidance:g}, Seed: {self.seed}, "
            f"Size: {self.width}x{self.height}, Model: {self.model}, Embedding hash: {self.embedding_hash}, "
            f"Version: noise2art {self.version}" + (f", Precision: {self.precision}" if self.precision != "model" else "")
            + (f", Steered: {self.stream['toward']['concept']} x{self.stream['toward']['weight']:.3g}"
               if self.stream.get("toward") else "")
        )
        return "\n".join(lines)


def _png_info(params: GenerationParams) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in asdict(params).items():
        info.add_itxt(key, str(value))
    info.add_itxt("noise2art", json.dumps(asdict(params)))
    info.add_itxt("parameters", params.infotext())
    return info


def save_png(image: Image.Image, params: GenerationParams, path: str | os.PathLike) -> Path:
    """Write `image` with its parameters; written to a temporary name first, then renamed."""
    info = _png_info(params)
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def png_bytes(image: Image.Image, params: GenerationParams) -> bytes:
    """The PNG `save_png` writes, as bytes (the store keeps it content-addressed)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=_png_info(params))
    return buffer.getvalue()


def read_params(path: str | os.PathLike) -> GenerationParams | dict:
    """The parameters stored in a PNG: ours as `GenerationParams`, another tool's infotext as a dict."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
    except (OSError, ValueError) as exc:
        raise InvalidArgument("image", f"cannot read '{path}': {exc}") from None
    if "noise2art" in text:
        data = json.loads(text["noise2art"])
        known = {f.name for f in fields(GenerationParams)}
        return GenerationParams(**{k: v for k, v in data.items() if k in known})
    if "parameters" in text:
        return parse_infotext(text["parameters"])
    raise InvalidArgument("image", f"'{path.name}' holds no generation parameters")


def parse_infotext(text: str) -> dict:
    """Parse the infotext format into a dict: prompt, negative, and each `Key: value` pair."""
    lines = text.strip().split("\n")
    settings_line = lines[-1] if re.search(r"\bSteps: ", lines[-1]) else ""
    body = lines[:-1] if settings_line else lines
    prompt, negative = [], []
    target = prompt
    for line in body:
        if line.startswith("Negative prompt:"):
            target = negative
            line = line[len("Negative prompt:"):].strip()
        target.append(line)
    result = {"prompt": "\n".join(prompt), "negative": "\n".join(negative)}
    for key, value in re.findall(r"\s*([\w ][\w \-/]*):\s*([^,]+)(?:,|$)", settings_line):
        result[key.strip()] = value.strip()
    return result
