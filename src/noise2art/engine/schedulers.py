"""Schedulers by name, built from a model's own scheduler config.

Every name maps to a diffusers scheduler class plus config overrides. `from_config`
keeps the model's beta schedule, prediction type and timestep spacing, so the same
name gives the same scheduler diffusers' pipelines build from that config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import diffusers

from noise2art.errors import InvalidArgument


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str
    overrides: dict = field(default_factory=dict)
    description: str = ""


SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler", {}, "DDIM, deterministic (eta 0)"),
    "ddpm": SchedulerSpec("DDPMScheduler", {}, "DDPM ancestral sampling"),
    "euler": SchedulerSpec("EulerDiscreteScheduler", {}, "Euler"),
    "euler-a": SchedulerSpec("EulerAncestralDiscreteScheduler", {}, "Euler ancestral (stochastic, per-seed step noise)"),
    "heun": SchedulerSpec("HeunDiscreteScheduler", {}, "Heun, second order (two UNet calls a step)"),
    "dpm++2m": SchedulerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
        "DPM-Solver++(2M)"),
    "dpm++2m-karras": SchedulerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM-Solver++(2M) with Karras sigmas"),
    "lms": SchedulerSpec("LMSDiscreteScheduler", {}, "linear multistep (the reference's scheduler)"),
    "pndm": SchedulerSpec("PNDMScheduler", {"skip_prk_steps": True}, "PNDM (PLMS)"),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", {}, "UniPC multistep"),
}


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def name_of_class(class_name: str) -> str | None:
    """The first registered name whose class is `class_name` (the model folder's own scheduler)."""
    for name, spec in SCHEDULERS.items():
        if spec.class_name == class_name:
            return name
    return None


def check_scheduler(name: str) -> str:
    if name not in SCHEDULERS:
        raise InvalidArgument("scheduler", f"unknown scheduler '{name}'; known: {', '.join(SCHEDULERS)}")
    return name


def make_scheduler(name: str | None, base_config: dict):
    """A fresh scheduler instance.

    Args:
        name: a key of `SCHEDULERS`, or None for the model folder's own class and config.
        base_config: the model's scheduler config (`scheduler/scheduler_config.json`).
    """
    if name is None:
        cls = getattr(diffusers, base_config["_class_name"])
        return cls.from_config(base_config)
    spec = SCHEDULERS[check_scheduler(name)]
    cls = getattr(diffusers, spec.class_name)
    return cls.from_config(base_config, **spec.overrides)
