"""UNet traces (`engine.tracing`): equal to the module bit for bit, and used only where safe."""

from __future__ import annotations

import copy

import pytest
import torch

from noise2art.engine.tracing import TracedUNet, UNetTracer


@pytest.fixture
def tracer_after(tiny_model):
    """Set the tiny model's tracing threshold for one test, with its traces dropped before
    and after (the model is shared by the session)."""
    saved = tiny_model.tracer
    tiny_model.tracer = UNetTracer()

    def set_after(after):
        tiny_model.tracer.after = after
        return tiny_model.tracer

    yield set_after
    tiny_model.tracer = saved


def _inputs(model, batch: int = 1):
    emb = model.encode(["a red ball"] * batch)
    sample = torch.randn(batch, model.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    return sample, torch.tensor(501), emb.cond


def test_traced_sampling_equals_untraced_bit_for_bit(tiny_model, tracer_after):
    emb = tiny_model.encode(["a red ball", "a blue cube"])
    kwargs = dict(seeds=[0, 1, 2], steps=4, scheduler="ddim")
    tracer_after(None)
    eager = tiny_model.sample(emb, **kwargs)
    eager_one = tiny_model.sample(emb[0], seeds=[5], steps=4, scheduler="ddim", guidance=1.0)
    tracer = tracer_after(0)
    traced = tiny_model.sample(emb, **kwargs)
    # Traced at a batch of 6 under guidance (12 rows); the same trace serves a batch of 1.
    assert tracer.traced == 1
    traced_one = tiny_model.sample(emb[0], seeds=[5], steps=4, scheduler="ddim", guidance=1.0)
    assert tracer.traced == 1
    assert torch.equal(traced, eager) and torch.equal(traced_one, eager_one)


def test_a_signature_is_traced_once_it_has_been_called_after_times(tiny_model, tracer_after):
    tracer = tracer_after(3)
    emb = tiny_model.encode("a red ball")
    tiny_model.sample(emb, seeds=[0], steps=3, scheduler="ddim", guidance=1.0)
    assert tracer.traced == 0  # three calls: not yet
    tiny_model.sample(emb, seeds=[0], steps=1, scheduler="ddim", guidance=1.0)
    assert tracer.traced == 1
    # Another latent size is another signature, counted on its own.
    tiny_model.sample(emb, seeds=[0], steps=2, scheduler="ddim", guidance=1.0, height=48, width=48)
    assert tracer.traced == 1
    # A scheduler whose timesteps are floats is another signature too.
    tiny_model.sample(emb, seeds=[0], steps=5, scheduler="euler", guidance=1.0)
    assert tracer.traced == 2


def test_untraced_when_asked_never(tiny_model, tracer_after):
    tracer = tracer_after(None)
    with tracer.tracing_now():
        assert tiny_model.warm_up() == 0
    assert tracer.wrap(tiny_model.unet) is tiny_model.unet


def test_steps_with_gradients_run_the_module_and_carry_them(tiny_model, tracer_after):
    tracer = tracer_after(0)
    emb = tiny_model.encode("a red ball")
    cond = emb.cond.clone().requires_grad_(True)
    latents = tiny_model.sample(emb.with_tensors(cond), seeds=[0], steps=3, grad_steps="last")
    latents.square().mean().backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    # The two steps without gradients were traced; the last ran the module.
    assert tracer.traced == 1
    tracer_after(None)
    with torch.no_grad():
        untraced = tiny_model.sample(emb.with_tensors(cond.detach()), seeds=[0], steps=3)
    assert torch.equal(latents.detach(), untraced)


def test_a_module_with_hooks_runs_itself_so_that_they_fire(tiny_model, tracer_after):
    tracer = tracer_after(0)
    calls = []
    handle = tiny_model.unet.register_forward_pre_hook(lambda mod, args: calls.append(1))
    try:
        tiny_model.sample(tiny_model.encode("a red ball"), seeds=[0], steps=3, scheduler="ddim", guidance=1.0)
    finally:
        handle.remove()
    assert len(calls) == 3 and tracer.traced == 0


def test_weights_changed_in_place_are_traced_again(tiny_model):
    unet = copy.deepcopy(tiny_model.unet)
    tracer = UNetTracer(after=0)
    sample, t, context = _inputs(tiny_model)
    wrapped = tracer.wrap(unet)
    assert isinstance(wrapped, TracedUNet) and wrapped.dtype == unet.dtype
    with torch.no_grad():
        before = wrapped(sample, t, encoder_hidden_states=context, return_dict=False)[0]
        for p in unet.parameters():
            p.mul_(0.9)
        after = wrapped(sample, t, encoder_hidden_states=context, return_dict=False)[0]
        expected = unet(sample, t, encoder_hidden_states=context, return_dict=False)[0]
    assert not torch.equal(before, after)
    assert torch.equal(after, expected)


def test_large_unets_are_never_traced(tiny_model):
    tracer = UNetTracer(after=0, max_parameters=10)
    assert tracer.wrap(tiny_model.unet) is tiny_model.unet


def test_other_calls_than_sampling_run_the_module(tiny_model):
    tracer = UNetTracer(after=0)
    sample, t, context = _inputs(tiny_model)
    wrapped = tracer.wrap(tiny_model.unet)
    with torch.no_grad():
        out = wrapped(sample, t, encoder_hidden_states=context)  # return_dict=True: a module output
        assert torch.equal(out.sample, tiny_model.unet(sample, t, encoder_hidden_states=context).sample)
    assert tracer.traced == 0


def test_warm_up_traces_the_full_and_preview_unets(tiny_model, with_student, tracer_after):
    tracer = tracer_after(64)
    assert tiny_model.warm_up() == 2
    emb = tiny_model.encode("a red ball")
    preview = tiny_model.sample(emb, seeds=[0, 1], quality="preview")
    assert tracer.traced == 2  # nothing new: the preview's signature was warmed
    tracer_after(None)
    assert torch.equal(preview, tiny_model.sample(emb, seeds=[0, 1], quality="preview"))


def test_at_most_max_traces_are_kept_the_least_recently_used_dropped(tiny_model, tracer_after):
    tracer = tracer_after(0)
    tracer.max_traces = 2
    emb = tiny_model.encode("a red ball")

    def draw(size: int, steps: int = 1):
        tiny_model.sample(emb, seeds=[0], steps=steps, scheduler="ddim", guidance=1.0, height=size, width=size)

    def held() -> set[int]:
        """The image sizes whose traces are held."""
        return {key[1][0][-1] * tiny_model.vae_scale_factor for key, e in tracer._entries.items()
                if e.traced is not None}

    for size in (32, 48, 64):
        draw(size)
    assert held() == {48, 64}
    # A dropped signature is traced again only after `after` more calls.
    tracer.after = 2
    draw(32, steps=2)
    assert held() == {48, 64}
    draw(32)
    assert held() == {32, 64}
