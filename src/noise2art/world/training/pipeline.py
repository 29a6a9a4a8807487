"""The whole training of the embedded model, in order, resumable at every stage.

    data -> autoencoder -> unet -> export          (the generator)
    data -> world CLIP -> aesthetic head -> attribute classifiers -> export   (companions)

`train_generator` and `train_companions` can run in two processes at once; `export`
then writes the model folder from whatever the runs hold.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from noise2art.world.training.autoencoder import AutoencoderConfig
from noise2art.world.training.autoencoder import train as train_autoencoder
from noise2art.world.training.checkpoint import load_checkpoint
from noise2art.world.training.companions import (AestheticConfig, AttributesConfig, ClipConfig, train_aesthetic,
                                                 train_attributes, train_clip)
from noise2art.world.training.unet import UNetConfig, build_unet, load_trained_vae
from noise2art.world.training.unet import train as train_unet


@dataclass
class Plan:
    """Run folders and sizes of one full training."""

    root: str = "runs"
    n_images: int = 30000
    size: int = 64
    autoencoder_steps: int = 2600
    autoencoder_batch: int = 32
    unet_steps: int = 4500
    unet_batch: int = 64
    clip_steps: int = 2500
    aesthetic_steps: int = 3000
    attribute_steps: int = 3000

    def dirs(self) -> dict[str, str]:
        r = Path(self.root)
        return {k: str(r / k) for k in ("data", "autoencoder", "unet", "clip", "aesthetic", "attributes")}

    def _shared(self, stage: str) -> dict:
        """The fields every stage's config takes from the plan: its run folder and the data."""
        d = self.dirs()
        return {"run_dir": d[stage], "data_dir": d["data"], "n_images": self.n_images, "size": self.size}

    def autoencoder(self) -> AutoencoderConfig:
        return AutoencoderConfig(**self._shared("autoencoder"), steps=self.autoencoder_steps,
                                 batch_size=self.autoencoder_batch)

    def unet(self) -> UNetConfig:
        return UNetConfig(**self._shared("unet"), autoencoder_run=self.dirs()["autoencoder"], steps=self.unet_steps,
                          batch_size=self.unet_batch)

    def clip(self) -> ClipConfig:
        return ClipConfig(**self._shared("clip"), steps=self.clip_steps,
                          text_states=str(Path(self.dirs()["unet"]) / "text.safetensors"))

    def aesthetic(self) -> AestheticConfig:
        return AestheticConfig(**self._shared("aesthetic"), clip_run=self.dirs()["clip"], steps=self.aesthetic_steps)

    def attributes(self) -> AttributesConfig:
        return AttributesConfig(**self._shared("attributes"), steps=self.attribute_steps)


def _timed(fn, *args, **kwargs):
    t0 = time.time()
    result = fn(*args, **kwargs)
    return result, time.time() - t0


def train_generator(plan: Plan, progress: bool = True) -> dict:
    _, t_ae = _timed(train_autoencoder, plan.autoencoder(), progress)
    _, t_unet = _timed(train_unet, plan.unet(), progress)
    return {"autoencoder_seconds": round(t_ae), "unet_seconds": round(t_unet)}


def train_companions(plan: Plan, progress: bool = True) -> dict:
    clip, t_clip = _timed(train_clip, plan.clip(), progress)
    _, t_aes = _timed(train_aesthetic, plan.aesthetic(), clip, progress)
    (_, accuracy), t_attr = _timed(train_attributes, plan.attributes(), progress)
    Path(plan.dirs()["attributes"], "accuracy.json").write_text(json.dumps(accuracy, indent=2))
    return {"clip_seconds": round(t_clip), "aesthetic_seconds": round(t_aes), "attributes_seconds": round(t_attr),
            "attribute_accuracy": accuracy}


def _step_of(run: str) -> int:
    path = Path(run) / "checkpoint" / "state.json"
    return json.loads(path.read_text())["step"] if path.is_file() else 0


def export(plan: Plan, out: str | Path, notes: dict | None = None) -> Path:
    """Write the model folder from the runs' latest checkpoints (EMA weights for the UNet)."""
    from noise2art.engine.companion_nets import (AestheticHead, AttributeClassifier, ClassifierConfig, WorldClip)
    from noise2art.world.training.export import export_model

    d = plan.dirs()
    vae = load_trained_vae(d["autoencoder"], "cpu")
    ucfg = plan.unet()
    unet = build_unet(ucfg, plan.size // 2 ** (len(plan.autoencoder().channels) - 1))
    meta = load_checkpoint(Path(d["unet"]) / "checkpoint", {"ema": unet})
    clip = aesthetic = classifier = None
    if (Path(d["clip"]) / "checkpoint").is_dir():
        clip = WorldClip(plan.clip().model)
        load_checkpoint(Path(d["clip"]) / "checkpoint", {"clip": clip})
    if clip is not None and (Path(d["aesthetic"]) / "checkpoint").is_dir():
        aesthetic = AestheticHead(clip.cfg.embed_dim)
        load_checkpoint(Path(d["aesthetic"]) / "checkpoint", {"head": aesthetic})
    if (Path(d["attributes"]) / "checkpoint").is_dir():
        from noise2art.world.attributes import FAMILIES

        classifier = AttributeClassifier(ClassifierConfig(families={f: list(v) for f, v in FAMILIES.items()}))
        load_checkpoint(Path(d["attributes"]) / "checkpoint", {"classifier": classifier})
    training = {
        "autoencoder_steps": _step_of(d["autoencoder"]), "unet_steps": _step_of(d["unet"]),
        "clip_steps": _step_of(d["clip"]), "aesthetic_steps": _step_of(d["aesthetic"]),
        "attribute_steps": _step_of(d["attributes"]), "n_images": plan.n_images, "size": plan.size,
        "hardware": f"{platform.machine()} CPU x{torch.get_num_threads()}" if not torch.cuda.is_available()
        else torch.cuda.get_device_name(),
        **(notes or {}),
    }
    return export_model(out, unet, vae, meta["extra"]["latent_scale"], clip, aesthetic, classifier, training)
