"""Our denoising loop against diffusers' StableDiffusionPipeline on tiny random SD models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import noise2art
from noise2art.engine.schedulers import make_scheduler


def pipeline_images(folder, scheduler_name, prompt, seeds, steps, guidance, negative=None, size=32):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(scheduler_name, dict(pipe.scheduler.config))
    out = pipe(
        [prompt] * len(seeds), negative_prompt=[negative] * len(seeds) if negative else None,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        num_inference_steps=steps, guidance_scale=guidance, height=size, width=size, output_type="np",
    ).images
    return (out * 255).round().astype(np.uint8)


def our_images(model, scheduler_name, prompt, seeds, steps, guidance, negative=None, size=32):
    images = model.generate(prompt, seeds=seeds, negative=negative, steps=steps, guidance=guidance,
                            scheduler=scheduler_name, height=size, width=size)
    return np.stack([np.asarray(im) for im in images])


@pytest.mark.parametrize("scheduler", ["pndm", "ddim", "euler", "euler-a", "dpm++2m", "lms"])
def test_same_pixels_as_diffusers_epsilon(tiny_sd_path, tiny_model, scheduler):
    ours = our_images(tiny_model, scheduler, "a red ball", [3, 11], 6, 7.5)
    ref = pipeline_images(tiny_sd_path, scheduler, "a red ball", [3, 11], 6, 7.5)
    assert ours.shape == ref.shape == (2, 32, 32, 3)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("scheduler", [None, "euler-a", "dpm++2m"])
def test_same_pixels_as_diffusers_v_prediction(tiny_sd_v_path, scheduler):
    model = noise2art.load_model(tiny_sd_v_path, device="cpu")
    name = scheduler or model.default_scheduler
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    ours = our_images(model, name, "a photo of the cat", [5], 5, 4.0, negative="blue")
    ref = pipeline_images(tiny_sd_v_path, name, "a photo of the cat", [5], 5, 4.0, negative="blue")
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_guidance_one_runs_conditional_pass_only(tiny_sd_path, tiny_model):
    ours = our_images(tiny_model, "ddim", "a dog", [0], 4, 1.0, size=48)
    ref = pipeline_images(tiny_sd_path, "ddim", "a dog", [0], 4, 1.0, size=48)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
