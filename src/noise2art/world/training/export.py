"""Assemble trained networks into the embedded model's folder (the layout `load_model` reads).

    model_index.json        diffusers layout marker
    noise2art.json          text encoder spec, sampling defaults, companions
    vocabulary.json         the words feedback sessions draw on (`vocabulary_spec`)
    unet/ vae/ scheduler/   diffusers folders (weights in fp16 to keep the package small)
    world_clip/ aesthetic/ attributes/   companion networks
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from noise2art.engine.companion_nets import save_module
from noise2art.world.training.unet import SCHEDULE, TEXT_SPEC

DEFAULTS = {"steps": 20, "guidance": 7.5, "scheduler": "ddim"}
COMPANIONS = {"world_clip": "world_clip", "aesthetic": "aesthetic", "attributes": "attributes"}


VOCABULARY_NOTE = (
    "Words a feedback session draws on. groups: terms to steer with, by group, one plain phrase per attribute "
    "value of the world (the first synonym its captions use; mountains and their snow named together, as the "
    "captions name them). style_terms: the captions' style and modifier phrases. words: the captions' "
    "vocabulary, for random prompts.")


def vocabulary_spec() -> dict:
    """The world's words as a model folder's `vocabulary.json` holds them (`Model.vocabulary`)."""
    from noise2art.world.captions import PHRASES, VOCABULARY

    groups: dict[str, list[str]] = {}
    style: list[str] = []
    for (family, _value), phrases in PHRASES.items():
        groups.setdefault(family, []).append(phrases[0])
        if family in ("style", "modifier"):
            style.extend(phrases)
    groups.pop("snow", None)  # snow is named with the mountains
    groups["mountains"] = ["no mountains", "a mountain", "a mountain range", "a snow-capped mountain",
                           "snow-capped mountains", "a bare mountain", "bare mountains"]
    return {"_comment": VOCABULARY_NOTE, "groups": groups, "style_terms": list(dict.fromkeys(style)),
            "words": list(VOCABULARY)}


def export_model(out: str | Path, unet, vae, latent_scale: float, clip=None, aesthetic=None, classifier=None,
                 training_notes: dict | None = None, defaults: dict | None = None) -> Path:
    import diffusers
    from diffusers import DDIMScheduler

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    vae.register_to_config(scaling_factor=float(latent_scale))
    for name, module in (("unet", unet), ("vae", vae)):
        module = module.to("cpu", torch.float16)
        module.save_pretrained(tmp / name, safe_serialization=True)
        module.to(torch.float32)
    DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1).save_pretrained(tmp / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    companions = {}
    if clip is not None:
        save_module(clip, clip.cfg, tmp / "world_clip")
        companions["world_clip"] = "world_clip"
    if aesthetic is not None:
        save_module(aesthetic, {"embed_dim": aesthetic.net[0].in_features, "hidden": aesthetic.net[0].out_features},
                    tmp / "aesthetic")
        companions["aesthetic"] = "aesthetic"
    if classifier is not None:
        save_module(classifier, classifier.cfg, tmp / "attributes")
        companions["attributes"] = "attributes"
    spec = {"text_encoder": TEXT_SPEC, "defaults": defaults or DEFAULTS, "companions": companions,
            "training": training_notes or {}}
    (tmp / "noise2art.json").write_text(json.dumps(spec, indent=2))
    (tmp / "vocabulary.json").write_text(json.dumps(vocabulary_spec(), indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
