"""The denoising loop: our own, written as numbered steps in one function.

It follows diffusers' `StableDiffusionPipeline.__call__` operation for operation (so
the same inputs give the same image) and adds what the methods need: a choice of which
steps carry gradients, gradient checkpointing, stopping early at step k, a per-step
callback, a cancel check, and resuming from the latents after step k.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch.utils.checkpoint import checkpoint

from noise2art.errors import Cancelled, InvalidArgument

GradSteps = Union[str, int]
StepCallback = Callable[[int, int, torch.Tensor], object]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class GradPlan:
    """Which denoising steps run with autograd, and whether their UNet calls are checkpointed."""

    first_grad_step: int  # steps with index >= this carry gradients
    checkpointing: bool

    def carries_grad(self, index: int) -> bool:
        return index >= self.first_grad_step


def plan_gradients(grad_steps: GradSteps, total: int) -> GradPlan:
    """Parse `grad_steps`: "none", "last", an int k / "last-k" / "last-3" (last k steps), or "all".

    Checkpointing is on whenever more than one step carries gradients: each UNet call then
    keeps only its inputs and recomputes its activations in the backward pass, so memory
    stays near that of a single step.
    """
    if isinstance(grad_steps, bool):
        raise InvalidArgument("grad_steps", f"expected 'none', 'last', 'all' or an int k >= 1, got {grad_steps!r}")
    if isinstance(grad_steps, str):
        key = grad_steps.strip().lower()
        if key == "none":
            return GradPlan(total, False)
        if key == "last":
            k = 1
        elif key == "all":
            k = total
        elif key.startswith("last-") and key[5:].isdigit():
            k = int(key[5:])
        elif key.isdigit():
            k = int(key)
        else:
            raise InvalidArgument("grad_steps", f"expected 'none', 'last', 'all', 'last-K' or an int k >= 1, got {grad_steps!r}")
    elif isinstance(grad_steps, int):
        k = grad_steps
    else:
        raise InvalidArgument("grad_steps", f"expected 'none', 'last', 'all' or an int k >= 1, got {grad_steps!r}")
    if k < 1:
        raise InvalidArgument("grad_steps", f"k must be >= 1, got {k}")
    k = min(k, total)
    return GradPlan(total - k, k > 1)


def _step_kwargs(scheduler, generators: list[torch.Generator] | None, eta: float) -> dict:
    """Extra arguments of `scheduler.step`, as diffusers' pipeline passes them."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params and generators is not None:
        # One generator per sample: ancestral step noise is then drawn per seed, so a
        # sample's noise does not depend on what else is in the batch.
        kwargs["generator"] = generators if len(generators) > 1 else generators[0]
    return kwargs


def clean_prediction(scheduler, latents: torch.Tensor, model_output: torch.Tensor, t: torch.Tensor,
                     step_index: int) -> torch.Tensor:
    """The clean latents `x0` that one denoiser output implies at timestep `t`.

    Works for every scheduler of `schedulers.SCHEDULERS`: sigma schedulers (LMS, Euler,
    Heun; `init_noise_sigma > 1`) hold `x = x0 + sigma eps`; the others hold
    `x = sqrt(abar) x0 + sqrt(1 - abar) eps`. Both give `abar = 1 / (1 + sigma^2)` and
    `x_vp = scale_model_input(x)`, so one formula per prediction type covers them.

    Args:
        latents: `[N, C, h, w]` the latents the UNet was called on (before scaling).
        model_output: `[N, C, h, w]` the (guided) UNet output for them.
        t: the timestep; `step_index`: its index in `scheduler.timesteps`.

    Returns:
        `[N, C, h, w]` estimated clean latents, in the latents' dtype.
    """
    if getattr(scheduler, "init_noise_sigma", 1.0) > 1.0:
        sigma = scheduler.sigmas[step_index].to(latents.device, torch.float32)
        abar = 1.0 / (1.0 + sigma**2)
        x_vp = latents.float() * abar.sqrt()
    else:
        abar = scheduler.alphas_cumprod[int(t)].to(latents.device, torch.float32)
        x_vp = latents.float()
    out = model_output.float()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0 = (x_vp - (1 - abar).sqrt() * out) / abar.sqrt()
    elif kind == "v_prediction":
        x0 = abar.sqrt() * x_vp - (1 - abar).sqrt() * out
    elif kind == "sample":
        x0 = out
    else:
        raise InvalidArgument("prediction_type", f"cannot form a clean prediction for {kind!r}")
    if getattr(scheduler.config, "clip_sample", False):
        # As DDIM and DDPM clip their own estimate when the model's config asks for it.
        bound = float(getattr(scheduler.config, "clip_sample_range", 1.0))
        x0 = x0.clamp(-bound, bound)
    return x0.to(latents.dtype)


def denoise(
    unet,
    scheduler,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    latents: torch.Tensor,
    *,
    steps: int,
    guidance: float,
    generators: list[torch.Generator] | None = None,
    grad_steps: GradSteps = "none",
    stop_after: int | None = None,
    start_at: int = 0,
    predict_clean: bool = False,
    eta: float = 0.0,
    callback: StepCallback | None = None,
    cancel: CancelCheck | None = None,
) -> torch.Tensor:
    """Run the reverse diffusion from initial noise to clean latents.

    Args:
        unet: a diffusers `UNet2DConditionModel`.
        scheduler: a fresh diffusers scheduler (it keeps state between steps).
        cond: `[N, L, D]` prompt states, one row per sample.
        uncond: `[N, L, D]` negative-prompt states, or None to skip guidance.
        latents: `[N, C, h, w]` initial noise with unit variance (scaled here by the
            scheduler's initial sigma, as the pipeline does); with `start_at` = k > 0, the
            latents after step k instead (as `stop_after=k` returns them), taken as they are.
        steps: number of inference steps.
        guidance: classifier-free guidance scale; `pred = u + g (c - u)`. Guidance <= 1
            runs the conditional pass only, as diffusers does.
        generators: one CPU generator per sample for the step noise of ancestral schedulers.
        grad_steps: which steps carry gradients to `cond`, `uncond` and `latents`
            (see `plan_gradients`). Steps before those run under `torch.no_grad`.
        stop_after: return the latents after this many steps (the seed-invariance method
            compares latents at an intermediate step k).
        start_at: resume after this many steps: `latents` hold the state after step
            `start_at` and the loop runs the remaining steps. A multistep scheduler
            (DPM-Solver++, UniPC, LMS) starts its history afresh there, so its first
            resumed step is first order; DDIM, DDPM and Euler resume exactly.
        predict_clean: return the clean latents the last step taken predicts (the
            denoiser's estimate of the final latents, `clean_prediction`) instead of the
            latents after it.
        callback: called after each step as `callback(step, total, latents)` (latents detached).
        cancel: checked before each step; returning True raises `Cancelled`.

    Returns:
        `[N, C, h, w]` latents after the last (or `stop_after`-th) step, or with
        `predict_clean` the clean latents that step predicts.
    """
    if predict_clean and stop_after == 0:
        raise InvalidArgument("stop_after", "predict_clean needs at least one step (stop_after >= 1)")
    # 1. Timesteps, and the initial noise scaled to the scheduler's first sigma.
    scheduler.set_timesteps(steps, device=latents.device)
    timesteps = scheduler.timesteps
    total = len(timesteps)
    if stop_after is not None:
        if not 0 <= stop_after <= total:
            raise InvalidArgument("stop_after", f"must be in [0, {total}], got {stop_after}")
        total = stop_after
    if isinstance(start_at, bool) or not isinstance(start_at, int) or not 0 <= start_at <= total:
        raise InvalidArgument("start_at", f"must be an integer in [0, {total}], got {start_at!r}")
    if predict_clean and start_at == total:
        raise InvalidArgument("start_at", "predict_clean needs at least one step after start_at")
    if start_at == 0:
        latents = latents * scheduler.init_noise_sigma
    elif hasattr(scheduler, "set_begin_index"):
        # Index-tracking schedulers then step from timestep `start_at` on, as img2img does.
        scheduler.set_begin_index(start_at)

    # 2. Guidance: batch the unconditional and conditional passes into one UNet call.
    use_cfg = uncond is not None and guidance > 1.0
    context = torch.cat([uncond, cond]) if use_cfg else cond
    extra = _step_kwargs(scheduler, generators, eta)

    # 3. Decide which steps carry gradients.
    plan = plan_gradients(grad_steps, total)

    # A reduced-precision copy of the UNet (see `Model.denoiser`) takes its inputs in its
    # own dtype (the context once, here); the latents and the scheduler's arithmetic stay
    # in the caller's.
    unet_dtype = getattr(unet, "dtype", latents.dtype)
    context = context.to(unet_dtype)

    def predict(model_input: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        out = unet(model_input.to(unet_dtype), t, encoder_hidden_states=ctx, return_dict=False)[0]
        return out.to(model_input.dtype)

    for i, t in enumerate(timesteps[start_at:total], start=start_at):
        # 4. Cancellation is checked between steps, never inside one.
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled at step {i} of {total}")
        with torch.set_grad_enabled(plan.carries_grad(i) and torch.is_grad_enabled()):
            # 5. Model input: the latents twice under guidance, scaled as the scheduler asks.
            model_input = torch.cat([latents] * 2) if use_cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            # 6. Noise prediction; checkpointed when several steps keep their graphs.
            if plan.checkpointing and plan.carries_grad(i) and torch.is_grad_enabled():
                noise_pred = checkpoint(predict, model_input, t, context, use_reentrant=False)
            else:
                noise_pred = predict(model_input, t, context)
            # 7. Classifier-free guidance.
            if use_cfg:
                pred_uncond, pred_cond = noise_pred.chunk(2)
                noise_pred = pred_uncond + guidance * (pred_cond - pred_uncond)
            if predict_clean and i == total - 1:
                # The last step asked for: its estimate of the clean latents, not the next x.
                return clean_prediction(scheduler, latents, noise_pred, t, i)
            # 8. Scheduler update x_t -> x_{t-1}.
            latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
        # 9. Progress.
        if callback is not None:
            callback(i + 1 - start_at, total - start_at, latents.detach())
    return latents
