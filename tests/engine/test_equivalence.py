"""Our denoising loop against diffusers' StableDiffusionPipeline on tiny random SD models.

The reference side builds its scheduler with diffusers alone (`from_config` of the folder's
config with each sampler's documented settings, written out here), so a wrong
name-to-config mapping in `engine.schedulers` cannot agree with itself.
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch

import noise2art

# Each advertised name -> the diffusers class and options that define that sampler.
REFERENCE_SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                "use_karras_sigmas": False}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                       "use_karras_sigmas": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def pipeline_images(folder, scheduler_name, prompt, seeds, steps, guidance, negative=None, size=32):
    """The pipeline's images; `scheduler_name` None keeps the folder's own scheduler as loaded."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if scheduler_name is not None:
        class_name, options = REFERENCE_SCHEDULERS[scheduler_name]
        pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **options)
    out = pipe(
        [prompt] * len(seeds), negative_prompt=[negative] * len(seeds) if negative else None,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        num_inference_steps=steps, guidance_scale=guidance, height=size, width=size, output_type="np",
    ).images
    return (out * 255).round().astype(np.uint8)


def our_images(model, scheduler_name, prompt, seeds, steps, guidance, negative=None, size=32, **kwargs):
    images = model.generate(prompt, seeds=seeds, negative=negative, steps=steps, guidance=guidance,
                            scheduler=scheduler_name, height=size, width=size, **kwargs)
    return np.stack([np.asarray(im) for im in images])


def max_diff(a, b) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_every_advertised_scheduler_is_tested():
    from noise2art.engine.schedulers import scheduler_names

    assert sorted(scheduler_names()) == sorted(REFERENCE_SCHEDULERS)


@pytest.mark.parametrize("scheduler", [None, *REFERENCE_SCHEDULERS])
def test_same_pixels_as_diffusers_epsilon(tiny_sd_path, tiny_model, scheduler):
    ours = our_images(tiny_model, scheduler, "a red ball", [3, 11], 6, 7.5)
    ref = pipeline_images(tiny_sd_path, scheduler, "a red ball", [3, 11], 6, 7.5)
    assert ours.shape == ref.shape == (2, 32, 32, 3)
    assert max_diff(ours, ref) <= 1


@pytest.mark.parametrize("scheduler", [None, "euler-a", "dpm++2m"])
def test_same_pixels_as_diffusers_v_prediction(tiny_sd_v_path, scheduler):
    model = noise2art.load_model(tiny_sd_v_path, device="cpu")
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    ours = our_images(model, scheduler, "a photo of the cat", [5], 5, 4.0, negative="blue")
    ref = pipeline_images(tiny_sd_v_path, scheduler, "a photo of the cat", [5], 5, 4.0, negative="blue")
    assert max_diff(ours, ref) <= 1


def test_guidance_one_runs_conditional_pass_only(tiny_sd_path, tiny_model):
    ours = our_images(tiny_model, "ddim", "a dog", [0], 4, 1.0, size=48)
    ref = pipeline_images(tiny_sd_path, "ddim", "a dog", [0], 4, 1.0, size=48)
    assert max_diff(ours, ref) <= 1


@pytest.mark.parametrize("change", ["prompt", "negative", "guidance", "seed"])
def test_negative_controls_move_pixels_well_past_the_tolerance(tiny_model, change):
    """The 1-level tolerance above is meaningful only if a different input moves pixels by much more."""
    base = dict(prompt="a red ball", seeds=[3], negative="blue", guidance=7.5)
    other = dict(base)
    other.update({"prompt": {"prompt": "a green tree"}, "negative": {"negative": "yellow"},
                  "guidance": {"guidance": 3.0}, "seed": {"seeds": [4]}}[change])
    a = our_images(tiny_model, "ddim", base["prompt"], base["seeds"], 6, base["guidance"], base["negative"])
    b = our_images(tiny_model, "ddim", other["prompt"], other["seeds"], 6, other["guidance"], other["negative"])
    assert max_diff(a, b) >= 10
