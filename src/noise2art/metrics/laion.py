"""LAION aesthetic predictor v2 for Stable Diffusion images.

The predictor (C. Schuhmann, "improved-aesthetic-predictor", LAION 2022) is a linear
MLP on the L2-normalised CLIP ViT-L/14 image embedding, trained on SAC + LOGOS + AVA
ratings (1..10). The reference (docs/optimize.md) scores decoded SD images with it
after a bicubic resize of the shorter side to 224, a centre crop and CLIP's
normalisation; :class:`LaionAestheticScorer` does the same, differentiably.

Weights load from ``.safetensors`` only: the public release is a pickled ``.pth``,
which this package never unpickles (docs/metrics.md shows a one-off conversion).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from noise2art.errors import InvalidArgument, ModelLoadError

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
"""The CLIP the public MLP weights were trained on."""

LAION_MLP_FILENAME = "sac+logos+ava1-l14-linearMSE.safetensors"
"""File looked up in a hub repo or folder when ``mlp`` names no file: the public
``sac+logos+ava1-l14-linearMSE.pth`` converted to safetensors."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_PICKLE_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".pkl", ".pickle"}
_HUB_REPO = re.compile(r"[\w.-]+/[\w.-]+")


class LaionAestheticMLP(nn.Module):
    """The predictor's head: Linear layers 768-1024-128-64-16-1, no activations.

    Layout and key names (``layers.0/2/4/6/7``) follow the original so that its
    weights load unchanged; dropout (0.2, 0.2, 0.1) only acts in training.
    ``input_dim`` is the CLIP projection dim (768 for ViT-L/14).
    Shapes: ``[B, input_dim] -> [B, 1]``.
    """

    def __init__(self, input_dim: int = 768):
        super().__init__()
        self.input_dim = input_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def clip_preprocess(
    images: torch.Tensor,
    size: int = 224,
    *,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
    antialias: bool = True,
) -> torch.Tensor:
    """CLIP's image preprocessing as a differentiable tensor op.

    ``images [B, 3, H, W]`` in ``[0, 1]`` -> ``[B, 3, size, size]``: bicubic resize of
    the shorter side to ``size`` (the longer side to ``int(size * long / short)``, as
    torchvision's ``Resize(size)`` and CLIP's processor compute it), centre crop
    (offset rounded as torchvision's ``CenterCrop``), then ``(x - mean) / std``.
    Antialiasing is on by default because CLIP's own (PIL) preprocessing low-pass
    filters when it shrinks, and the predictor was trained on such inputs; the
    result is clamped to ``[0, 1]`` before normalising since PIL's 8-bit output is.
    """
    height, width = images.shape[-2:]
    short, long = (height, width) if height <= width else (width, height)
    new_long = int(size * long / short)
    new_size = (size, new_long) if height <= width else (new_long, size)
    if (height, width) != new_size:
        images = F.interpolate(
            images, size=new_size, mode="bicubic", align_corners=False, antialias=antialias
        ).clamp(0.0, 1.0)
    top = int(round((new_size[0] - size) / 2.0))
    left = int(round((new_size[1] - size) / 2.0))
    images = images[..., top : top + size, left : left + size]
    mean_t = images.new_tensor(mean).view(1, 3, 1, 1)
    std_t = images.new_tensor(std).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


class LaionAestheticScorer(nn.Module):
    """Aesthetic score ``[B]`` of ``images [B, 3, H, W]`` in ``[0, 1]``, differentiable.

    ``clip_model`` is a transformers ``CLIPVisionModelWithProjection``; ``mlp`` a
    :class:`LaionAestheticMLP` whose ``input_dim`` equals the CLIP projection dim.
    Pipeline (docs/optimize.md): :func:`clip_preprocess` to the CLIP image size,
    ``image_embeds``, L2 normalisation, MLP. The scorer is frozen: its parameters
    need no gradient and it stays in eval mode (dropout off) even inside a module
    put in training mode. Scores are float32 whatever the CLIP dtype.
    """

    def __init__(self, clip_model: nn.Module, mlp: LaionAestheticMLP, *, antialias: bool = True):
        super().__init__()
        projection_dim = int(clip_model.config.projection_dim)
        if mlp.input_dim != projection_dim:
            raise InvalidArgument(
                "mlp", f"takes {mlp.input_dim}-d embeddings but the CLIP projects to {projection_dim}"
            )
        self.clip = clip_model
        self.mlp = mlp
        self.image_size = int(clip_model.config.image_size)
        self.antialias = antialias
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> LaionAestheticScorer:
        # A scorer in training mode would apply the MLP's dropout and make scores
        # random; keep eval whatever a parent module asks.
        return super().train(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP image embeddings ``[B, projection_dim]`` (float32)."""
        pixels = clip_preprocess(images, self.image_size, antialias=self.antialias)
        clip_param = next(self.clip.parameters())
        pixels = pixels.to(device=clip_param.device, dtype=clip_param.dtype)
        embeds = self.clip(pixel_values=pixels).image_embeds
        # Normalise in float32: a half-precision norm loses digits the MLP needs.
        return F.normalize(embeds.float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embeds = self.embed(images)
        mlp_param = next(self.mlp.parameters())
        scores = self.mlp(embeds.to(dtype=mlp_param.dtype))
        return scores.squeeze(-1).float()


def load_laion_aesthetic(
    *,
    clip: str | os.PathLike = DEFAULT_CLIP,
    mlp: str | os.PathLike,
    mlp_filename: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike | None = None,
) -> LaionAestheticScorer:
    """Load the LAION aesthetic predictor v2 for Stable Diffusion images.

    ``clip``: a hub id or local folder that ``CLIPVisionModelWithProjection
    .from_pretrained`` reads (a full ``CLIPModel`` checkpoint works; its text tower
    is skipped). ``mlp``: the head's weights as ``.safetensors``, given as
    - a local file ``path/to/head.safetensors``,
    - a local folder holding ``mlp_filename`` (default :data:`LAION_MLP_FILENAME`),
    - a hub repo ``owner/repo`` holding ``mlp_filename``, or
    - a file in a hub repo ``owner/repo/path/in/repo.safetensors``.

    Pickle formats (``.pth``, ``.pt``, ``.ckpt``, ``.bin``) are refused
    (``InvalidArgument``): convert them to safetensors once. A file or model that
    cannot be found or fetched (offline, wrong id) raises ``ModelLoadError`` with a
    one-line message. ``dtype`` applies to CLIP; the tiny MLP stays float32.
    """
    mlp_path = _resolve_mlp_file(mlp, mlp_filename, cache_dir)
    clip_model = _load_clip(clip, dtype, cache_dir)
    head = _load_mlp(mlp_path, int(clip_model.config.projection_dim))
    return LaionAestheticScorer(clip_model, head).to(device)


def _refuse_pickle(name: str) -> None:
    suffix = Path(name).suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        raise InvalidArgument(
            "mlp",
            f"'{name}' is a pickle checkpoint ({suffix}), which noise2art never loads because "
            "unpickling can run code; convert it to .safetensors once (see docs/metrics.md)",
        )
    if suffix != ".safetensors":
        raise InvalidArgument("mlp", f"'{name}': expected a .safetensors file")


def _resolve_mlp_file(mlp: str | os.PathLike, filename: str | None, cache_dir) -> Path:
    """Local path of the MLP weights, downloading from the hub when ``mlp`` is a hub id."""
    text = os.fspath(mlp)
    local = Path(text).expanduser()
    if local.is_dir():
        local = local / (filename or LAION_MLP_FILENAME)
        _refuse_pickle(local.name)
        if not local.is_file():
            raise ModelLoadError(f"LAION aesthetic MLP: no file '{local.name}' in folder '{text}'")
        return local
    if local.is_file():
        _refuse_pickle(local.name)
        return local

    parts = text.split("/")
    suffix = Path(text).suffix.lower()
    if suffix == ".safetensors" or suffix in _PICKLE_SUFFIXES:
        if len(parts) < 3 or local.is_absolute() or not _HUB_REPO.fullmatch("/".join(parts[:2])):
            _refuse_pickle(text)
            raise ModelLoadError(f"LAION aesthetic MLP: no such file '{text}'")
        repo_id, hub_filename = "/".join(parts[:2]), "/".join(parts[2:])
    elif _HUB_REPO.fullmatch(text):
        repo_id, hub_filename = text, filename or LAION_MLP_FILENAME
    else:
        raise ModelLoadError(f"LAION aesthetic MLP: '{text}' is neither a file, a folder nor a hub repo id")
    _refuse_pickle(hub_filename)
    return Path(_hub_download(repo_id, hub_filename, cache_dir))


def _hub_download(repo_id: str, filename: str, cache_dir) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 -- every failure here means "could not fetch"
        raise ModelLoadError(
            f"could not fetch LAION aesthetic MLP '{filename}' from hub repo '{repo_id}' "
            f"(offline, missing or private): {_one_line(error)}"
        ) from error


def _load_clip(clip: str | os.PathLike, dtype: torch.dtype, cache_dir) -> nn.Module:
    from transformers import AutoConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    name = os.fspath(clip)
    try:
        config = AutoConfig.from_pretrained(name, cache_dir=cache_dir)
        if getattr(config, "model_type", None) == "clip":
            # A full CLIP checkpoint: its vision config may not carry the projection
            # size (only the top level has it), so take it from there.
            vision = config.vision_config
            vision.projection_dim = config.projection_dim
            config = vision
        # A full CLIP checkpoint's text tower is expected to go unused; transformers
        # would print a table of those keys. Missing keys are checked below instead.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                name, config=config, dtype=dtype, cache_dir=cache_dir, output_loading_info=True
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as error:  # noqa: BLE001 -- transformers raises OSError, ValueError, HTTP errors
        raise ModelLoadError(
            f"could not load CLIP vision model '{name}' (offline, missing or not a CLIP "
            f"checkpoint): {_one_line(error)}"
        ) from error
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ModelLoadError(
            f"'{name}' is not a CLIP vision checkpoint: {len(missing)} weights missing, "
            f"e.g. {', '.join(missing[:3])}"
        )
    return model.eval()


def _load_mlp(path: Path, input_dim: int) -> LaionAestheticMLP:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except Exception as error:  # noqa: BLE001 -- a corrupt file surfaces as several error types
        raise ModelLoadError(f"could not read LAION aesthetic MLP '{path}': {_one_line(error)}") from error
    first = state.get("layers.0.weight")
    if first is not None and first.shape[1] != input_dim:
        raise ModelLoadError(
            f"LAION aesthetic MLP '{path.name}' takes {first.shape[1]}-d embeddings but the CLIP "
            f"projects to {input_dim}; pair it with the CLIP it was trained on"
        )
    head = LaionAestheticMLP(input_dim)
    try:
        head.load_state_dict({key: value.float() for key, value in state.items()})
    except RuntimeError as error:
        raise ModelLoadError(
            f"LAION aesthetic MLP '{path.name}' does not match the 768-1024-128-64-16-1 layout: "
            f"{_one_line(error)}"
        ) from error
    return head.eval()


def _one_line(error: BaseException) -> str:
    """The error's message on one line, cut to 300 characters: hub errors span
    paragraphs, and interfaces print load errors on a single line."""
    line = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    line = line or type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."
