"""`Model`: one object holding tokenizer, text encoder, UNet, VAE and scheduler config.

`encode` turns prompts into a `PromptEmbedding`, `sample` runs our denoising loop over
embeddings x seeds in memory-sized chunks, `decode` turns latents into images, and
`generate` does all three for a prompt.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from noise2art.engine import validation as V
from noise2art.engine.companions import Companions, aesthetic_scorer, image_text_scorer
from noise2art.engine.devices import check_precision, resolve_precision
from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import CancelCheck, GradSteps, StepCallback, denoise
from noise2art.engine.schedulers import SCHEDULERS, make_scheduler
from noise2art.engine.settings import QUALITIES, SampleSettings, SamplingOverrides
from noise2art.engine.text import TextEncoder
from noise2art.engine.tracing import UNetTracer
from noise2art.errors import InvalidArgument, Noise2ArtError


@dataclass
class Model:
    """A text-to-image latent diffusion model, loaded by `noise2art.load_model`.

    Attributes:
        model_id: the name it was loaded by (registry name, hub id or path).
        unet: diffusers `UNet2DConditionModel`.
        vae: diffusers `AutoencoderKL`.
        text_encoder: prompts -> `[B, L, D]` states.
        scheduler_config: the folder's scheduler config (dict).
        device, dtype: where and in what precision the networks run.
        defaults: the model's recommended steps / guidance / scheduler (`SamplingOverrides`;
            a None scheduler is the folder's own scheduler config).
        preview: the settings of `quality="preview"` on top of the defaults (fewer UNet
            calls, the fastest setting that keeps quality as benchmarks/bench_fewstep.py
            measures it); the folder's `noise2art.json` "preview", empty when it has none,
            or its few-step student's own defaults with `unet` naming the student.
        unet_variants: UNets the model can denoise with instead of its own, by name: its
            few-step students (`{name: model folder}`), loaded on first use. A student
            shares everything else (text encoder, autoencoder, companions), so the same
            embedding and seed give the student's version of the same picture.
        companions: the networks beside the denoiser (world CLIP, aesthetic head, attribute
            classifiers, ...), a `Companions`.
        tracer: replays the UNets' forward passes from TorchScript traces when sampling
            on the CPU without gradients, once a call signature is frequent
            (`engine.tracing`; `warm_up` traces at once, `tracer.after = None` never).
        vocabulary: the words feedback sessions draw on, from the model folder's
            `vocabulary.json`: `groups` (`{group: [term, ...]}` to steer with), `style_terms`
            and `words` (for random prompts); None for a model without one (sessions then
            use generic art terms; `methods.vocabulary`).
    """

    model_id: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: TextEncoder
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    defaults: SamplingOverrides = field(default_factory=SamplingOverrides)
    preview: SamplingOverrides = field(default_factory=SamplingOverrides)
    companions: Companions = field(default_factory=Companions)
    source: str = ""
    vocabulary: dict | None = None
    unet_variants: dict = field(default_factory=dict)
    tracer: UNetTracer = field(default_factory=UNetTracer, repr=False, compare=False)
    # The students' UNets once loaded, by (name, dtype).
    _variant_unets: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # Reduced-precision copies of the UNet for no-grad sampling, by dtype, each with the
    # UNet it was copied from (a replaced UNet gets a fresh copy).
    _denoisers: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # An fp32 copy of a reduced-precision VAE, made the first time it decodes NaN.
    _vae_fp32: torch.nn.Module | None = field(default=None, init=False, repr=False, compare=False)

    # -- geometry ------------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side (8 for SD; read from the VAE, never assumed)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def embedding_shape(self) -> tuple[int, int]:
        """`(L, D)` of this model's prompt embeddings."""
        return self.text_encoder.max_length, self.text_encoder.dim

    @property
    def scheduler_class(self) -> str:
        """The diffusers class of the model folder's own scheduler config."""
        return str(self.scheduler_config.get("_class_name", ""))

    # -- companions (metric context) -----------------------------------------------------

    @property
    def aesthetic(self):
        """`images [B,3,H,W] -> [B]` aesthetic score, or None when no scorer is loaded."""
        return aesthetic_scorer(self)

    @property
    def image_text(self):
        """`(images, text) -> [B]` image-text similarity, or None without world CLIP."""
        return image_text_scorer(self)

    # -- text ----------------------------------------------------------------------------

    def encode(self, prompts: str | Sequence[str], negative: str | Sequence[str] | None = None) -> PromptEmbedding:
        """Encode prompts (and negative prompts, "" by default) into a `PromptEmbedding` `[B, L, D]`.

        Over-long prompts are truncated to the encoder's L tokens with a warning that says
        how many tokens were dropped.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise InvalidArgument("prompts", "need at least one prompt")
        if negative is None:
            negative = [""] * len(prompts)
        elif isinstance(negative, str):
            negative = [negative] * len(prompts)
        else:
            negative = list(negative)
        if len(negative) != len(prompts):
            raise InvalidArgument("negative", f"expected {len(prompts)} negative prompts, got {len(negative)}")
        cond = self.text_encoder(prompts, self.device, self.dtype)
        uncond = self.text_encoder(negative, self.device, self.dtype)
        return PromptEmbedding(cond.states, uncond.states, cond.mask, self.model_id, prompts, negative)

    def load_embedding(self, path) -> PromptEmbedding:
        """Read an embedding file made by this model (a clear error for another model's)."""
        return PromptEmbedding.load(path, model_id=self.model_id, shape=self.embedding_shape).to(self.device, self.dtype)

    def as_embedding(self, prompt_or_embedding, negative=None) -> PromptEmbedding:
        """A prompt (or prompts) or a `PromptEmbedding` -> a `PromptEmbedding` `[B, L, D]` on this
        model's device and dtype; another model's embedding is refused, naming both."""
        if isinstance(prompt_or_embedding, PromptEmbedding):
            if prompt_or_embedding.model_id != self.model_id or prompt_or_embedding.shape != self.embedding_shape:
                raise InvalidArgument(
                    "embedding",
                    f"made by model '{prompt_or_embedding.model_id}' {list(prompt_or_embedding.shape)}, "
                    f"this is '{self.model_id}' {list(self.embedding_shape)}",
                )
            return prompt_or_embedding.to(self.device, self.dtype)
        return self.encode(prompt_or_embedding, negative)

    # -- noise ---------------------------------------------------------------------------

    def resolve_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """`(height, width)` in pixels: the given sides, else the model's defaults or native size, checked."""
        height = self.defaults.height or self.native_size if height is None else height
        width = self.defaults.width or self.native_size if width is None else width
        return V.check_size(height, width, self.vae_scale_factor)

    def generators(self, seeds: Iterable[int]) -> list[torch.Generator]:
        """One CPU generator per seed: a seed means the same noise on every device."""
        return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def initial_noise(self, seeds: Sequence[int], height: int | None = None, width: int | None = None,
                      generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """`[S, C, h, w]` unit-variance initial latents, drawn on the CPU from each seed's generator."""
        height, width = self.resolve_size(height, width)
        gens = generators if generators is not None else self.generators(V.check_seeds(seeds))
        shape = (1, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        noise = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in gens])
        return noise.to(self.device, self.dtype)

    # -- sampling ------------------------------------------------------------------------

    def auto_batch_size(self, height: int, width: int, guidance: float) -> int:
        """Samples per UNet batch that fit a memory budget.

        Activation memory grows with latent area x channel width; the constant was measured
        on SD 1.5 (about 1.5 GB per 512 px sample at fp16 with guidance). The budget is a
        third of free CUDA memory, or 4 GB on CPU/MPS.
        """
        cells = (height // self.vae_scale_factor) * (width // self.vae_scale_factor)
        width_sum = sum(self.unet.config.block_out_channels)
        per_sample = cells * width_sum * 180 * torch.finfo(self.dtype).bits // 8
        per_sample *= 2 if guidance > 1 else 1
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = free // 3
        else:
            budget = 4 * 2**30
        return int(max(1, min(64, budget // max(per_sample, 1))))

    def resolve(self, overrides: SamplingOverrides | SampleSettings | None = None, **fields) -> SampleSettings:
        """Every sampling setting fixed: the given overrides, else the model's defaults.

        Args:
            overrides: a `SamplingOverrides` (None fields take the model's), or an already
                resolved `SampleSettings` (resolved again to the same values, `fields` on top).
            fields: individual overrides on top (`steps=`, `guidance=`, ...); None is "not given".

        Returns:
            `SampleSettings`: a None scheduler stays None (the folder's own scheduler
            config), the precision is resolved for this machine ("model" or "bf16"), the
            batch size fits the memory budget unless given.
        """
        if isinstance(overrides, SampleSettings):
            overrides = overrides.as_overrides()
        asked = (overrides or SamplingOverrides()).merged(SamplingOverrides(**fields)).check()
        base = self.defaults.merged(self.preview) if asked.quality == "preview" else self.defaults
        given = base.merged(asked)
        steps = V.check_steps(30 if given.steps is None else given.steps)
        train_steps = int(self.scheduler_config.get("num_train_timesteps", 1000))
        if steps >= train_steps:
            # The schedule has `train_steps` noise levels; some schedulers (PNDM) index one past
            # the last when asked for all of them.
            raise InvalidArgument("steps", f"must be below the model's {train_steps} training timesteps, got {steps}")
        guidance = V.check_guidance(7.5 if given.guidance is None else given.guidance)
        height, width = self.resolve_size(asked.height, asked.width)
        precision = check_precision("model" if given.precision is None else given.precision)
        dtype = resolve_precision(self.device, self.dtype, precision)
        scheduler = given.scheduler
        scheduler_class = self.scheduler_class if scheduler is None else SCHEDULERS[scheduler].class_name
        unet = given.unet or ""
        if unet and unet not in self.unet_variants:
            have = ", ".join(sorted(self.unet_variants)) or "none"
            raise InvalidArgument("unet", f"model '{self.model_id}' has no UNet named {unet!r} (students: {have})")
        return SampleSettings(
            steps=steps, guidance=guidance, scheduler=scheduler, scheduler_class=scheduler_class,
            height=height, width=width, eta=0.0 if given.eta is None else float(given.eta),
            # Recorded as resolved on this machine, so a record repeats it anywhere.
            precision="model" if dtype == self.dtype else "bf16",
            batch_size=asked.batch_size or self.auto_batch_size(height, width, guidance),
            unet=unet,
        )

    def sample(
        self,
        embedding: PromptEmbedding | str | Sequence[str],
        seeds: Sequence[int] | None = None,
        latents: torch.Tensor | None = None,
        *,
        settings: SamplingOverrides | SampleSettings | None = None,
        grad_steps: GradSteps = "none",
        stop_after: int | None = None,
        start_at: int = 0,
        predict_clean: bool = False,
        pairing: str = "product",
        callback: StepCallback | None = None,
        cancel: CancelCheck | None = None,
        return_settings: bool = False,
        **overrides,
    ):
        """Denoise initial noise under prompt embeddings.

        Args:
            embedding: B prompt embeddings (or prompts, encoded here).
            seeds: S seeds. With `pairing="product"` the output holds B x S samples,
                embedding-major (all seeds of embedding 0 first); with `pairing="zip"`
                embedding i goes with seed i (B == S, or one side of length 1 broadcasts).
            latents: `[N, C, h, w]` initial unit-variance noise instead of seeds (paired
                with the embeddings like seeds). Seeds, if also given, then drive only the
                step noise of ancestral schedulers.
            settings: `SamplingOverrides` or resolved `SampleSettings` (see `resolve`).
            overrides: single settings on top of `settings`: `steps`, `guidance`,
                `scheduler`, `height`, `width`, `eta`, `precision` ("model" | "bf16" |
                "auto"), `batch_size`, `quality`, `unet` (a student of `unet_variants`
                instead of the model's own UNet). A precision other than the model's
                dtype runs a copy of the UNet made on first use; the latents and the
                scheduler's arithmetic stay in the model's dtype. A call that carries
                gradients runs the model's own UNet unless `unet` names a student.
            grad_steps: "none", "last", "all", "last-K" or an int k: which steps carry gradients.
            stop_after: return latents after this many steps.
            start_at: resume after this many steps: `latents` are required and hold the
                state after step `start_at` (as `stop_after=start_at` returns it), not
                initial noise (`sampling.denoise`).
            predict_clean: return the clean latents the last step taken predicts instead
                (`sampling.clean_prediction`).
            callback: `callback(step, total, latents)` after each step, counted over the
                whole call (all memory-sized chunks): `step` runs from 1 to `total`.
            cancel: a function checked between steps; True raises `noise2art.Cancelled`.
            return_settings: also return the `SampleSettings` that ran.

        Returns:
            `[N, C, h, w]` latents on the model's device, or `(latents, settings)`.
        """
        unknown = sorted(set(overrides) - set(SamplingOverrides.__dataclass_fields__))
        if unknown:
            raise TypeError(f"sample() got unexpected keyword argument(s) {', '.join(unknown)}")
        run = self.resolve(settings, **overrides)
        emb = self.as_embedding(embedding)
        if start_at and latents is None:
            raise InvalidArgument("start_at", "resuming after a step needs the latents of that step")
        if pairing not in ("product", "zip"):
            raise InvalidArgument("pairing", f"must be 'product' or 'zip', got {pairing!r}")
        unet = self.unet
        if run.unet:
            unet = self.variant_unet(run.unet, self.dtype if run.precision == "model" else torch.bfloat16)
        elif grad_steps == "none" or not torch.is_grad_enabled():
            unet = self.denoiser(self.dtype if run.precision == "model" else torch.bfloat16)
        # Steps without gradients replay a trace where one is held (`engine.tracing`).
        unet = self.tracer.wrap(unet)
        height, width = run.height, run.width

        # Pair embeddings with noise sources.
        b = len(emb)
        if latents is not None:
            latents = latents.to(self.device, self.dtype)
            if latents.ndim == 3:
                latents = latents[None]
            expected = (self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
            if tuple(latents.shape[1:]) != expected:
                raise InvalidArgument("latents", f"expected [N, {', '.join(map(str, expected))}], got {list(latents.shape)}")
            n_noise = latents.shape[0]
            noise_seeds = V.check_seeds(seeds) if seeds is not None else [0] * n_noise
            if len(noise_seeds) != n_noise:
                raise InvalidArgument("seeds", f"with latents, give one seed per latent ({n_noise}), got {len(noise_seeds)}")
        else:
            noise_seeds = V.check_seeds([0] if seeds is None else seeds)
            n_noise = len(noise_seeds)
        if pairing == "product":
            emb_index = [i for i in range(b) for _ in range(n_noise)]
            noise_index = [j for _ in range(b) for j in range(n_noise)]
        else:
            if b != n_noise and 1 not in (b, n_noise):
                raise InvalidArgument("seeds", f"zip pairing needs as many seeds/latents as embeddings ({b}), got {n_noise}")
            n = max(b, n_noise)
            emb_index = [i if b > 1 else 0 for i in range(n)]
            noise_index = [j if n_noise > 1 else 0 for j in range(n)]

        chunk = run.batch_size
        n_chunks = -(-len(emb_index) // chunk)
        outputs = []
        for c, start in enumerate(range(0, len(emb_index), chunk)):
            ei = emb_index[start:start + chunk]
            ni = noise_index[start:start + chunk]
            # A fresh generator per sample, even where seeds repeat, so each sample's noise
            # stream is the same as if it were sampled alone.
            gens = self.generators([noise_seeds[j] for j in ni])
            if latents is None:
                init = self.initial_noise([noise_seeds[j] for j in ni], height, width, generators=gens)
            else:
                init = latents[ni]
            idx = torch.tensor(ei, device=self.device)
            cond = emb.cond.index_select(0, idx)
            uncond = emb.uncond.index_select(0, idx)
            outputs.append(
                denoise(
                    unet, make_scheduler(run.scheduler, self.scheduler_config), cond, uncond, init,
                    steps=run.steps, guidance=run.guidance, generators=gens, grad_steps=grad_steps,
                    stop_after=stop_after, start_at=start_at, predict_clean=predict_clean, eta=run.eta, callback=_over_chunks(callback, c, n_chunks), cancel=cancel,
                )
            )
        out = torch.cat(outputs)
        return (out, run) if return_settings else out

    def variant_unet(self, name: str, dtype: torch.dtype) -> torch.nn.Module:
        """The UNet of student `name` (`unet_variants`) in `dtype`, loaded once."""
        key = (name, dtype)
        if key not in self._variant_unets:
            from diffusers import UNet2DConditionModel

            if name not in self.unet_variants:
                raise InvalidArgument("unet", f"model '{self.model_id}' has no UNet named {name!r}")
            unet = UNet2DConditionModel.from_pretrained(self.unet_variants[name], subfolder="unet",
                                                        use_safetensors=True, torch_dtype=dtype)
            self._variant_unets[key] = unet.to(self.device, dtype).eval().requires_grad_(False)
        return self._variant_unets[key]

    def denoiser(self, dtype: torch.dtype) -> torch.nn.Module:
        """The UNet in `dtype`: the model's own, or a gradient-free copy made once."""
        if dtype == self.dtype:
            return self.unet
        source, reduced = self._denoisers.get(dtype, (None, None))
        if source is not self.unet:
            reduced = copy.deepcopy(self.unet).to(dtype).requires_grad_(False)
            self._denoisers[dtype] = (self.unet, reduced)
        return reduced

    def warm_up(self, qualities: Sequence[str] = QUALITIES) -> int:
        """Trace now the UNets that `qualities` sample with at the native size (two steps
        each from one seed), so that a long-running process (the service) does not pay
        for tracing in its first images. Returns how many traces the model holds; 0 where
        nothing is traced (a GPU, a large UNet, `tracer.after = None`)."""
        emb = self.encode("")
        with torch.no_grad(), self.tracer.tracing_now():
            for quality in dict.fromkeys(qualities):
                self.sample(emb, seeds=[0], quality=quality, steps=2)
        return self.tracer.traced

    # -- decoding ------------------------------------------------------------------------

    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Latents `[N, C, h, w]` -> images `[N, 3, H, W]` in [0, 1] (differentiable).

        A half-precision VAE can overflow to NaN; the decode is then retried in fp32, and a
        result that still holds NaNs is an error rather than a black image.
        """
        chunk = batch_size or max(1, self.auto_batch_size(latents.shape[-2] * self.vae_scale_factor,
                                                          latents.shape[-1] * self.vae_scale_factor, 1.0))
        parts = [self._decode_chunk(latents[i:i + chunk]) for i in range(0, latents.shape[0], chunk)]
        return torch.cat(parts)

    def _vae_decode(self, vae, latents: torch.Tensor) -> torch.Tensor:
        cfg = vae.config
        z = latents / cfg.scaling_factor
        if getattr(cfg, "shift_factor", None):
            z = z + cfg.shift_factor
        x = vae.decode(z.to(vae.dtype), return_dict=False)[0]
        return (x / 2 + 0.5).clamp(0, 1)

    def _decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        images = self._vae_decode(self.vae, latents)
        if torch.isfinite(images).all():
            return images
        if self.vae.dtype != torch.float32:
            if self._vae_fp32 is None:
                self._vae_fp32 = copy.deepcopy(self.vae).float()
            images = self._vae_decode(self._vae_fp32, latents.float()).to(latents.dtype)
            if torch.isfinite(images).all():
                return images
        raise Noise2ArtError("the VAE decoded NaN values (also in fp32); no image was written")

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images `[N, 3, H, W]` in [0, 1] -> latents `[N, C, h, w]` (the posterior mean, scaled)."""
        x = images.to(self.device, self.vae.dtype) * 2 - 1
        dist = self.vae.encode(x).latent_dist
        z = dist.mean
        cfg = self.vae.config
        if getattr(cfg, "shift_factor", None):
            z = z - cfg.shift_factor
        return z * cfg.scaling_factor

    # -- all in one ----------------------------------------------------------------------

    def render(self, prompt_or_embedding, seeds: Sequence[int] = (0,), negative=None, *, return_settings: bool = False,
               **sample_kwargs):
        """`sample` then `decode`: images `[N, 3, H, W]` in [0, 1] (and the `SampleSettings` that ran)."""
        emb = self.as_embedding(prompt_or_embedding, negative)
        latents, settings = self.sample(emb, seeds, return_settings=True, **sample_kwargs)
        images = self.decode(latents)
        return (images, settings) if return_settings else images

    def generate(self, prompt_or_embedding, seeds: Sequence[int] = (0,), negative=None, *, return_settings: bool = False,
                 **sample_kwargs):
        """Prompt(s) or a `PromptEmbedding` and seeds -> PIL images (embedding-major order),
        and with `return_settings=True` the `SampleSettings` that ran."""
        with torch.no_grad():
            images, settings = self.render(prompt_or_embedding, seeds, negative, return_settings=True, **sample_kwargs)
        return (to_pil(images), settings) if return_settings else to_pil(images)


def _over_chunks(callback: StepCallback | None, chunk: int, n_chunks: int) -> StepCallback | None:
    """A chunk's step callback, renumbered over the whole call: chunk c's step i is step
    `c * total + i` of `n_chunks * total` (a scheduler's total is known only once it runs)."""
    if callback is None:
        return None

    def report(step: int, total: int, latents: torch.Tensor):
        return callback(chunk * total + step, n_chunks * total, latents)

    return report


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """`[N, 3, H, W]` in [0, 1] -> PIL images, rounded as diffusers' image processor does."""
    arr = images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()
    arr = (arr * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]
