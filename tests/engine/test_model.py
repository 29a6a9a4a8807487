"""Model.encode / sample / decode / generate on a tiny random SD model."""

from __future__ import annotations

import inspect

import pytest
import torch

import noise2art
from noise2art import Cancelled, InvalidArgument, PromptEmbedding
from noise2art.engine.sampling import plan_gradients


def test_encode_shapes_and_uncond_is_empty_prompt(tiny_model):
    emb = tiny_model.encode(["a red ball", "a cat"])
    assert emb.cond.shape == (2, 77, 32) and emb.uncond.shape == (2, 77, 32)
    assert emb.mask.shape == (2, 77)
    assert emb.model_id == tiny_model.model_id
    empty = tiny_model.encode([""])
    torch.testing.assert_close(emb.uncond[0], empty.cond[0])


def test_empty_prompt_allowed(tiny_model):
    images = tiny_model.generate("", seeds=[0], steps=2)
    assert images[0].size == (32, 32)


def test_long_prompt_truncated_with_warning(tiny_model):
    prompt = " ".join(["red ball"] * 60)
    with pytest.warns(UserWarning, match=r"\d+ token\(s\) dropped"):
        emb = tiny_model.encode(prompt)
    assert emb.cond.shape[1] == 77


def test_encode_cache_gives_the_encoders_states_and_private_copies(tiny_model):
    encoder = tiny_model.text_encoder
    fresh = encoder._encode(["a cached prompt", ""], tiny_model.device, tiny_model.dtype)
    first = tiny_model.encode("a cached prompt")
    torch.testing.assert_close(first.cond[0], fresh.states[0])
    torch.testing.assert_close(first.uncond[0], fresh.states[1])
    first.cond.add_(1.0)  # a caller that edits its embedding in place ...
    again = tiny_model.encode(["a cached prompt", "another prompt", "a cached prompt"])
    torch.testing.assert_close(again.cond[0], fresh.states[0])  # ... does not change the cache
    torch.testing.assert_close(again.cond[2], fresh.states[0])
    assert again.cond.shape == (3, 77, 32)
    prompt = " ".join(["green ball"] * 60)
    for _ in range(2):  # the warning also comes from the cache
        with pytest.warns(UserWarning, match=r"\d+ token\(s\) dropped"):
            tiny_model.encode(prompt)


def test_encode_cache_is_bounded(tiny_model, monkeypatch):
    encoder = tiny_model.text_encoder
    monkeypatch.setattr(encoder, "cache_size", 3)
    for k in range(6):
        tiny_model.encode(f"prompt number {k}")
    assert len(encoder._cache) <= 3
    assert (f"prompt number 5", str(tiny_model.device), tiny_model.dtype) in encoder._cache


def test_seed_gives_same_image_in_batch_as_alone(tiny_model):
    alone = tiny_model.render("a blue cube", seeds=[7], steps=4, scheduler="euler-a")
    batch = tiny_model.render("a blue cube", seeds=[1, 7, 9], steps=4, scheduler="euler-a")
    torch.testing.assert_close(batch[1:2], alone, atol=2e-3, rtol=0)
    assert not torch.allclose(batch[0], batch[1])


def test_product_order_and_chunking(tiny_model):
    emb = tiny_model.encode(["a cat", "a dog"])
    full = tiny_model.sample(emb, seeds=[0, 1, 2], steps=3)
    chunked = tiny_model.sample(emb, seeds=[0, 1, 2], steps=3, batch_size=2)
    assert full.shape == (6, 4, 16, 16)
    torch.testing.assert_close(full, chunked, atol=1e-4, rtol=0)
    only_dog = tiny_model.sample(emb[1], seeds=[1], steps=3)
    torch.testing.assert_close(full[4:5], only_dog, atol=1e-4, rtol=0)


def test_zip_pairing_and_explicit_latents(tiny_model):
    emb = tiny_model.encode(["a cat", "a dog"])
    noise = tiny_model.initial_noise([4, 5])
    a = tiny_model.sample(emb, latents=noise, pairing="zip", steps=3)
    b = tiny_model.sample(emb, seeds=[4, 5], pairing="zip", steps=3)
    torch.testing.assert_close(a, b)
    with pytest.raises(InvalidArgument, match="latents"):
        tiny_model.sample(emb, latents=torch.zeros(1, 4, 8, 8), steps=2)


def test_callback_and_cancel(tiny_model):
    seen = []
    tiny_model.sample("a cat", seeds=[0], steps=4, scheduler="ddim", callback=lambda i, n, lat: seen.append((i, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled):
        tiny_model.sample("a cat", seeds=[0], steps=5, cancel=cancel)


def test_stop_after_returns_intermediate_latents(tiny_model):
    seen = []
    tiny_model.sample("a cat", seeds=[0], steps=6, scheduler="ddim", callback=lambda i, n, lat: seen.append(lat))
    k2 = tiny_model.sample("a cat", seeds=[0], steps=6, scheduler="ddim", stop_after=2)
    torch.testing.assert_close(k2, seen[1])


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++2m"])
def test_start_at_resumes_from_intermediate_latents(tiny_model, scheduler):
    # The latents after step k, resumed with start_at=k, end where the full run ends:
    # exactly for single-step schedulers; a multistep one restarts its history (first
    # order for one step), so it lands close but not on the same latents.
    emb = tiny_model.encode(["a cat"])
    kw = dict(steps=6, scheduler=scheduler)
    with torch.no_grad():
        full = tiny_model.sample(emb, [3], **kw)
        k2 = tiny_model.sample(emb, [3], stop_after=2, **kw)
        seen = []
        resumed = tiny_model.sample(emb, [3], latents=k2, start_at=2, callback=lambda i, n, lat: seen.append((i, n)),
                                    **kw)
    assert seen == [(i, 4) for i in range(1, 5)]
    if scheduler == "dpm++2m":
        cos = torch.nn.functional.cosine_similarity(resumed.flatten(), full.flatten(), dim=0)
        assert cos > 0.98 and not torch.equal(resumed, full)
    else:
        torch.testing.assert_close(resumed, full)
    with pytest.raises(InvalidArgument, match="start_at"):
        tiny_model.sample(emb, [3], start_at=2, **kw)  # no latents to resume from
    with pytest.raises(InvalidArgument, match="start_at"):
        tiny_model.sample(emb, [3], latents=k2, start_at=7, **kw)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "euler", "lms"])
def test_clean_prediction_matches_the_schedulers_own_estimate(tiny_model, scheduler):
    # These schedulers report the clean latents they step toward; ours must agree with each.
    from noise2art.engine.sampling import clean_prediction
    from noise2art.engine.schedulers import make_scheduler

    sched = make_scheduler(scheduler, tiny_model.scheduler_config)
    sched.set_timesteps(4)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sched.init_noise_sigma
    for i in (0, 2):
        t = sched.timesteps[i]
        out = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(i + 1))
        if hasattr(sched, "_step_index"):
            sched._step_index = i  # the sigma schedulers step by index
        extra = {"generator": torch.Generator().manual_seed(0)} if "generator" in inspect.signature(sched.step).parameters else {}
        expected = sched.step(out, t, x, **extra).pred_original_sample
        torch.testing.assert_close(clean_prediction(sched, x, out, t, i), expected, rtol=1e-4, atol=1e-4)


def test_predict_clean_returns_the_last_steps_estimate(tiny_model):
    emb = tiny_model.encode(["a red ball"])
    with torch.no_grad():
        final = tiny_model.sample(emb, [1], steps=3)
        last = tiny_model.sample(emb, [1], steps=3, stop_after=3, predict_clean=True)
        early = tiny_model.sample(emb, [1], steps=3, stop_after=1, predict_clean=True)
        after_one = tiny_model.sample(emb, [1], steps=3, stop_after=1)
    assert early.shape == final.shape and not torch.allclose(early, after_one)
    # The last step's estimate is the clean latents the sampler ends at (up to its final alpha).
    cos = torch.nn.functional.cosine_similarity(last.flatten(), final.flatten(), dim=0)
    assert cos > 0.99
    with pytest.raises(InvalidArgument, match="predict_clean"):
        tiny_model.sample(emb, [1], steps=3, stop_after=0, predict_clean=True)


@pytest.mark.parametrize("grad_steps", ["last", 2, "last-3", "all"])
def test_gradients_reach_the_embedding(tiny_model, grad_steps):
    emb = tiny_model.encode("a red ball")
    cond = emb.cond.clone().requires_grad_(True)
    latents = tiny_model.sample(emb.with_tensors(cond), seeds=[0], steps=4, scheduler="ddim", grad_steps=grad_steps)
    images = tiny_model.decode(latents)
    images.mean().backward()
    assert cond.grad is not None and torch.isfinite(cond.grad).all() and cond.grad.abs().sum() > 0


def test_no_gradients_by_default(tiny_model):
    emb = tiny_model.encode("a red ball")
    cond = emb.cond.clone().requires_grad_(True)
    latents = tiny_model.sample(emb.with_tensors(cond), seeds=[0], steps=2)
    assert not latents.requires_grad


def test_bf16_precision_samples_with_a_bf16_copy_close_to_fp32(tiny_model):
    emb = tiny_model.encode("a red ball")
    full = tiny_model.sample(emb, seeds=[0, 1], steps=3)
    half = tiny_model.sample(emb, seeds=[0, 1], steps=3, precision="bf16")
    # The latents come back in the model's dtype; the UNet itself is untouched.
    assert half.dtype == torch.float32 and tiny_model.unet.dtype == torch.float32
    assert not torch.equal(full, half)
    assert (half - full).abs().mean() < 0.02 * full.abs().mean()
    copy = tiny_model.denoiser(torch.bfloat16)
    assert copy.dtype == torch.bfloat16 and copy is tiny_model.denoiser(torch.bfloat16)
    assert tiny_model.denoiser(torch.float32) is tiny_model.unet
    # The default is the model's own dtype, bit for bit.
    torch.testing.assert_close(tiny_model.sample(emb, seeds=[0, 1], steps=3, precision="model"), full, atol=0, rtol=0)


def test_gradients_always_run_the_models_own_unet(tiny_model):
    emb = tiny_model.encode("a red ball")
    cond = emb.cond.clone().requires_grad_(True)
    out = tiny_model.sample(emb.with_tensors(cond), seeds=[0], steps=2, scheduler="ddim", grad_steps="last",
                            precision="bf16")
    out.sum().backward()
    assert cond.grad is not None and cond.grad.dtype == torch.float32
    with torch.no_grad():
        plain = tiny_model.sample(emb, seeds=[0], steps=2, scheduler="ddim")
    torch.testing.assert_close(out.detach(), plain, atol=1e-5, rtol=0)


def test_gradient_through_all_steps_reaches_initial_latents(tiny_model):
    noise = tiny_model.initial_noise([3]).requires_grad_(True)
    out = tiny_model.sample("a cat", latents=noise, steps=3, scheduler="ddim", grad_steps="all")
    out.sum().backward()
    assert noise.grad is not None and noise.grad.abs().sum() > 0


def test_checkpointed_all_matches_plain_gradients(tiny_model):
    emb = tiny_model.encode("a red ball")
    grads = []
    for gs in ("all", 3):
        cond = emb.cond.clone().requires_grad_(True)
        tiny_model.sample(emb.with_tensors(cond), seeds=[0], steps=3, scheduler="ddim", grad_steps=gs).sum().backward()
        grads.append(cond.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_plan_gradients_parsing():
    assert plan_gradients("none", 10).first_grad_step == 10
    assert plan_gradients("last", 10).first_grad_step == 9 and not plan_gradients("last", 10).checkpointing
    assert plan_gradients("last-3", 10).first_grad_step == 7
    assert plan_gradients(20, 10).first_grad_step == 0
    assert plan_gradients("all", 10).checkpointing
    for bad in ("some", 0, -1, 1.5, True):
        with pytest.raises(InvalidArgument, match="grad_steps"):
            plan_gradients(bad, 10)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(height=33), "height"),
        (dict(width=31), "width"),
        (dict(steps=0), "steps"),
        (dict(steps=1001), "steps"),
        (dict(guidance=float("nan")), "guidance"),
        (dict(guidance=float("inf")), "guidance"),
        (dict(guidance=-1.0), "guidance"),
        (dict(seeds=[-1]), "seeds"),
        (dict(seeds=[2**63]), "seeds"),
        (dict(scheduler="nope"), "scheduler"),
        (dict(precision="fp8"), "precision"),
    ],
)
def test_validation_names_the_argument(tiny_model, kwargs, name):
    kwargs = {"seeds": [0], "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=f"^{name}: "):
        tiny_model.sample("a cat", **kwargs)


def test_size_factor_comes_from_the_vae(tiny_model):
    # This VAE has two blocks: 2 px per latent cell, so 34 px is valid here (SD would need 8).
    assert tiny_model.vae_scale_factor == 2
    assert tiny_model.sample("a cat", seeds=[0], steps=1, height=34, width=36).shape == (1, 4, 17, 18)


def test_embedding_save_load_roundtrip(tiny_model, tmp_path):
    emb = tiny_model.encode(["a cat", "a dog"], negative="blue")
    path = emb.save(tmp_path / "e.safetensors")
    back = tiny_model.load_embedding(path)
    torch.testing.assert_close(back.cond, emb.cond)
    torch.testing.assert_close(back.uncond, emb.uncond)
    assert back.prompts == ["a cat", "a dog"] and back.negative == ["blue", "blue"]
    assert back.hash() == emb.hash()
    assert not list(tmp_path.glob(".*.tmp"))


def test_embedding_from_another_model_is_refused(tiny_model, tmp_path):
    emb = tiny_model.encode("a cat")
    other = PromptEmbedding(emb.cond, emb.uncond, emb.mask, "some-other-model", emb.prompts)
    path = other.save(tmp_path / "o.safetensors")
    with pytest.raises(InvalidArgument, match="some-other-model"):
        tiny_model.load_embedding(path)
    with pytest.raises(InvalidArgument, match="some-other-model"):
        tiny_model.sample(other, seeds=[0], steps=1)


def test_unreadable_embedding_file(tmp_path, tiny_model):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InvalidArgument, match="embedding"):
        tiny_model.load_embedding(bad)


def test_decode_nan_is_an_error(tiny_model):
    with pytest.raises(noise2art.Noise2ArtError, match="NaN"):
        tiny_model.decode(torch.full((1, 4, 16, 16), float("nan")))


def test_resolve_fixes_every_setting_and_sample_hands_it_back(tiny_model):
    from noise2art import SampleSettings, SamplingOverrides

    ran = tiny_model.resolve(SamplingOverrides(steps=3, height=48, width=32), guidance=2.0)
    assert isinstance(ran, SampleSettings)
    assert (ran.steps, ran.guidance, ran.height, ran.width, ran.precision) == (3, 2.0, 48, 32, "model")
    assert ran.scheduler is None and ran.scheduler_class == "PNDMScheduler" and ran.scheduler_label == "default"
    latents, back = tiny_model.sample("a cat", [0], settings=ran, batch_size=1, return_settings=True)
    assert back.steps == 3 and back.batch_size == 1 and latents.shape[-2:] == (48 // tiny_model.vae_scale_factor, 32 // tiny_model.vae_scale_factor)


def test_callback_counts_steps_over_every_chunk(tiny_model):
    seen = []
    tiny_model.sample("a cat", [0, 1, 2], steps=2, scheduler="ddim", batch_size=2,
                      callback=lambda step, total, _: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_unknown_setting_keyword_is_refused(tiny_model):
    import pytest

    with pytest.raises(TypeError, match="stepz"):
        tiny_model.sample("a cat", [0], stepz=3)


def test_steps_must_stay_below_the_training_timesteps(tiny_model):
    # The tiny folder's PNDM schedule indexes past its 1000 noise levels at 1000 steps.
    train = tiny_model.scheduler_config["num_train_timesteps"]
    assert tiny_model.resolve(steps=train - 1).steps == train - 1
    with pytest.raises(InvalidArgument) as err:
        tiny_model.resolve(steps=train)
    assert err.value.name == "steps" and str(train) in str(err.value)


def test_quality_preview_takes_the_models_preview_under_what_is_asked(tiny_model):
    from noise2art.engine.settings import SamplingOverrides

    saved = tiny_model.defaults, tiny_model.preview
    tiny_model.defaults = SamplingOverrides(steps=20, guidance=5.0)
    tiny_model.preview = SamplingOverrides(steps=6, scheduler="dpm++2m")
    try:
        full, preview = tiny_model.resolve(quality="full"), tiny_model.resolve(quality="preview")
        assert (full.steps, full.guidance, full.scheduler) == (20, 5.0, None)
        assert (preview.steps, preview.guidance, preview.scheduler) == (6, 5.0, "dpm++2m")
        assert tiny_model.resolve(quality="preview", steps=4).steps == 4  # what is asked wins
        # The settings that ran are what a record keeps: they repeat the preview without the word.
        assert tiny_model.resolve(preview.as_overrides()) == preview
        with pytest.raises(InvalidArgument, match="quality"):
            tiny_model.resolve(quality="draft")
    finally:
        tiny_model.defaults, tiny_model.preview = saved


def test_a_preview_can_run_a_student_unet_and_records_name_it(with_student):
    """A model that carries a few-step student (`unet_variants`) runs it for previews; the
    settings say which UNet ran, and the record names the student as the model."""
    from noise2art.pngmeta import GenerationParams

    model = with_student
    preview = model.resolve(quality="preview")
    full = model.resolve(quality="full", steps=3, guidance=1.0, scheduler="ddim")
    assert preview.unet == "tiny-fast" and full.unet == ""
    assert "unet" not in full.to_dict() and preview.to_dict()["unet"] == "tiny-fast"
    with torch.no_grad():
        a = model.render("a red ball", seeds=[4], quality="preview")
        again = model.render("a red ball", seeds=[4], settings=preview.as_overrides())
        own = model.render("a red ball", seeds=[4], settings=full.as_overrides())
    torch.testing.assert_close(a, again, atol=0, rtol=0)  # the record repeats the preview
    assert not torch.allclose(a, own)  # and it was the student that ran
    record = dict(prompt="a red ball", negative="", seed=4, model=model.model_id, version="x", embedding_hash="h")
    assert GenerationParams.from_settings(preview, **record).model == "tiny-fast"
    assert GenerationParams.from_settings(full, **record).model == model.model_id
    with pytest.raises(InvalidArgument) as err:
        model.resolve(unet="no-such-student")
    assert err.value.name == "unet" and "tiny-fast" in str(err.value)
