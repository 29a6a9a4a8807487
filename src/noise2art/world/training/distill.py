"""Few-step student of the embedded model: guidance and 20 DDIM steps distilled into 4 single-pass steps.

The method is trajectory distillation in the form progressive distillation trains it
(Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR
2022), with guidance distilled into the student as Meng et al. do ("On Distillation of
Guided Diffusion Models", CVPR 2023), in one round instead of halving repeatedly:

1. **Trajectories.** The teacher (the shipped model, its default sampler: DDIM, 20 steps,
   guidance 7.5) runs from seeded noise under random captions of the world's grammar.
   Its latents are kept at the student's step boundaries: the student's 4-step DDIM
   timesteps (751, 501, 251, 1 under the model's "leading" spacing) are a subset of the
   teacher's 20, so each boundary is a state the teacher passes through. A trajectory is
   `[K + 1, C, h, w]`: the initial noise, the teacher's latents at timesteps 501, 251, 1,
   and its final latents.
2. **Student.** A copy of the teacher's UNet, conditional pass only (no negative prompt,
   guidance 1). One training pair is (state k, its timestep, caption) -> state k + 1; the
   student's epsilon is turned into the state a DDIM step would reach, and the loss is the
   squared error of the clean latents that step implies against the ones the teacher's
   next state implies (Salimans & Ho's x-space target), so every step's error is measured
   in picture units. Optionally (`detail_weight`) the error on the latents' finest scale
   counts extra, so that fine texture is not what the student gives up first.

The student therefore reproduces the full model's picture for the same seed and prompt
(a preview while scrolling and the full-quality image on open show the same thing), in 4
UNet evaluations instead of 40.

Both phases resume: trajectories are written in numbered chunks (each chunk a fixed set
of seeds and captions), training checkpoints like every other stage.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from noise2art.world.training.common import EMA, RunLog, StageConfig, open_run, run_steps, training_device

# Seeds of trajectory j: SEED_BASE + j, apart from the evaluation's seeds (0..7).
SEED_BASE = 10_000_000


@dataclass
class DistillConfig(StageConfig):
    run_dir: str = "runs/fast"
    teacher: str = "world-64"  # registry name or model folder
    teacher_steps: int = 20
    teacher_guidance: float = 7.5
    student_steps: int = 4
    n_trajectories: int = 8192
    chunk: int = 256  # trajectories per file (and per teacher batch)
    empty_share: float = 0.05  # share of trajectories under the empty prompt
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-4
    ema_decay: float = 0.995
    checkpoint_every: int = 100
    seed: int = 0
    # Draw trajectories whose caption names these families this many times as often
    # (`{"modifier": 3.0}`): the families a few-step student loses first get more of its steps.
    focus: dict = field(default_factory=dict)
    # Start the student from this model's UNet (a registry name or folder: a student
    # already trained) instead of a copy of the teacher's, to fine-tune it.
    init_from: str = ""
    # Weight of the extra squared error on the fine detail of the clean latents (`detail`):
    # a student short of capacity gives up fine texture first under a plain squared error.
    detail_weight: float = 0.0


def run_config(run_dir: str | Path) -> DistillConfig:
    """The config a distillation run was started with (its `config.json`)."""
    from noise2art.errors import InvalidArgument

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise InvalidArgument("runs", f"no distillation run in {run_dir} (train the 'fast' stage first)")
    known = DistillConfig.__dataclass_fields__
    return DistillConfig(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def boundaries(teacher_timesteps: list[int], student_timesteps: list[int]) -> list[int]:
    """Teacher step counts after which its latents sit at each student boundary after the first.

    Entry k is the number of teacher steps taken when its latents are at student timestep
    k + 1 (the last entry: all teacher steps, the final latents). Raises ValueError when a
    student timestep is not one of the teacher's.
    """
    counts = []
    for t in student_timesteps[1:]:
        if t not in teacher_timesteps:
            raise ValueError(f"student timestep {t} is not a teacher timestep ({teacher_timesteps})")
        counts.append(teacher_timesteps.index(t))
    if student_timesteps[0] not in teacher_timesteps:
        raise ValueError(f"student timestep {student_timesteps[0]} is not a teacher timestep")
    return counts + [len(teacher_timesteps)]


def student_timesteps(scheduler_config: dict, steps: int) -> list[int]:
    from noise2art.engine.schedulers import make_scheduler

    sched = make_scheduler("ddim", scheduler_config)
    sched.set_timesteps(steps)
    return [int(t) for t in sched.timesteps]


def trajectory_captions(cfg: DistillConfig, start: int, n: int) -> list[str]:
    """Captions of trajectories `start .. start + n - 1`: the world's grammar, the held-out
    evaluation prompts excluded, a share `cfg.empty_share` empty (deterministic per index)."""
    from noise2art.world.attributes import sample_attributes
    from noise2art.world.captions import caption
    from noise2art.world.evaluation import held_out_prompts

    held_out = set(held_out_prompts(200))
    out = []
    for j in range(start, start + n):
        rng = np.random.default_rng([cfg.seed, 4049, j])
        if rng.random() < cfg.empty_share:
            out.append("")
            continue
        text = caption(sample_attributes(rng), rng)
        while text in held_out:
            text = caption(sample_attributes(rng), rng)
        out.append(text)
    return out


def make_trajectories(cfg: DistillConfig, progress: bool = True) -> Path:
    """Write `cfg.n_trajectories` teacher trajectories into `run_dir/trajectories/` (resumable)."""
    from tqdm import tqdm

    from noise2art.engine.loading import load_model
    from safetensors.torch import save_file

    out = Path(cfg.run_dir) / "trajectories"
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_model(cfg.teacher, device=str(training_device()), dtype="fp32")
    sched_cfg = teacher.scheduler_config
    t_teacher = student_timesteps(sched_cfg, cfg.teacher_steps)
    t_student = student_timesteps(sched_cfg, cfg.student_steps)
    keep = boundaries(t_teacher, t_student)
    n_chunks = -(-cfg.n_trajectories // cfg.chunk)
    bar = tqdm(total=n_chunks, desc="trajectories", file=sys.stderr, disable=not progress)
    for c in range(n_chunks):
        path = out / f"{c:04d}.safetensors"
        if path.is_file():
            bar.update()
            continue
        start = c * cfg.chunk
        n = min(cfg.chunk, cfg.n_trajectories - start)
        captions = trajectory_captions(cfg, start, n)
        seeds = [SEED_BASE + start + i for i in range(n)]
        emb = teacher.encode(captions)
        init = teacher.initial_noise(seeds)
        states = {0: init.detach().cpu()}

        def record(step, total, latents):
            if step in keep:
                states[step] = latents.cpu()

        with torch.no_grad():
            teacher.sample(emb, latents=init, seeds=seeds, pairing="zip", steps=cfg.teacher_steps,
                           guidance=cfg.teacher_guidance, scheduler="ddim", batch_size=n, callback=record)
        traj = torch.stack([states[0]] + [states[k] for k in keep], dim=1)  # [n, K+1, C, h, w]
        tmp = path.with_suffix(".tmp")
        save_file({"states": traj.contiguous(), "cond": emb.cond.detach().cpu().half().contiguous()}, str(tmp),
                  metadata={"captions": json.dumps(captions), "seeds": json.dumps(seeds),
                            "timesteps": json.dumps(t_student)})
        tmp.rename(path)
        bar.update()
    bar.close()
    return out


def load_trajectories(folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[int], list[str]]:
    """All chunks: states `[N, K+1, C, h, w]`, cond `[N, L, D]` (fp16), the student timesteps
    and the N captions."""
    from safetensors import safe_open

    states, conds, timesteps, captions = [], [], None, []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            states.append(f.get_tensor("states"))
            conds.append(f.get_tensor("cond"))
            timesteps = json.loads(f.metadata()["timesteps"])
            captions += json.loads(f.metadata()["captions"])
    if not states:
        raise FileNotFoundError(f"no trajectories in {folder}")
    return torch.cat(states), torch.cat(conds), timesteps, captions


def ddim_clean(x: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """Clean latents a DDIM step implies from `x` at alpha-bar `a_t` and epsilon `eps` (`[B, ...]`)."""
    return (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()


def clean_target(x: torch.Tensor, x_next: torch.Tensor, a_t: torch.Tensor, a_next: torch.Tensor) -> torch.Tensor:
    """The clean latents x0 for which a DDIM step from `x` (at `a_t`) lands on `x_next` (at `a_next`).

    DDIM: x_next = sqrt(a_next) x0 + sqrt(1 - a_next) (x - sqrt(a_t) x0) / sqrt(1 - a_t), linear in x0.
    """
    r = ((1 - a_next) / (1 - a_t)).sqrt()
    return (x_next - r * x) / (a_next.sqrt() - r * a_t.sqrt())


def student_scheduler(scheduler_config: dict):
    """The student's sampler: DDIM on the teacher's schedule, never clipping or thresholding
    its clean estimate (the loss's DDIM algebra is the unclipped step)."""
    from noise2art.engine.schedulers import make_scheduler

    return make_scheduler("ddim", {**scheduler_config, "clip_sample": False, "thresholding": False})


def boundary_alphas(scheduler_config: dict, timesteps: list[int]) -> torch.Tensor:
    """Alpha-bar at each student timestep and after the last step: `[K + 1]`.

    After its last step DDIM uses `final_alpha_cumprod` (alphas_cumprod[0] when the
    scheduler's set_alpha_to_one is False, as the model's is).
    """
    sched = student_scheduler(scheduler_config)
    alphas = sched.alphas_cumprod
    return torch.tensor([float(alphas[t]) for t in timesteps] + [float(sched.final_alpha_cumprod)])


def detail(x: torch.Tensor) -> torch.Tensor:
    """The finest scale of latents `[B, C, h, w]`: what is left after a 2x2 box blur (each
    cell minus the mean of its 2x2 block; h and w even)."""
    coarse = torch.nn.functional.avg_pool2d(x, 2)
    return x - torch.nn.functional.interpolate(coarse, scale_factor=2, mode="nearest")


def pair_loss(student, x, x_next, t, a_t, a_next, cond, detail_weight: float = 0.0) -> torch.Tensor:
    """Squared error, in clean latents, of the student's DDIM step from `x` against the teacher's `x_next`.

    Args:
        x, x_next: `[B, C, h, w]` states at a boundary and at the next one.
        t: `[B]` timesteps of `x`; a_t, a_next: `[B]` alpha-bar at `x` and at `x_next`.
        cond: `[B, L, D]` prompt states (the conditional pass only: guidance is distilled).
        detail_weight: weight of the same error on the latents' finest scale (`detail`),
            added on top: fine texture counts 1 + detail_weight times.
    """
    a_t, a_next = a_t.view(-1, 1, 1, 1), a_next.view(-1, 1, 1, 1)
    eps = student(x, t, encoder_hidden_states=cond, return_dict=False)[0]
    error = ddim_clean(x, eps, a_t) - clean_target(x, x_next, a_t, a_next)
    loss = error.square().mean()
    if detail_weight:
        loss = loss + detail_weight * detail(error).square().mean()
    return loss


def start_unet(init_from: str):
    """The UNet of model `init_from` (an embedded model's name or a model folder holding a
    `unet/`), to start a student from."""
    from diffusers import UNet2DConditionModel

    from noise2art.engine import registry
    from noise2art.errors import InvalidArgument

    folder = registry.local_folder(init_from)
    if not (folder / "unet").is_dir():
        raise InvalidArgument("init-from", f"no UNet in {init_from!r} (an embedded model's name or a model folder)")
    return UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True, torch_dtype=torch.float32)


def train(cfg: DistillConfig, progress: bool = True):
    """Distil the student from the trajectories (written first if missing). Returns the EMA student."""
    import copy

    from noise2art.engine.loading import load_model
    from noise2art.world.training.unet import caption_weights, check_focus

    check_focus(cfg.focus)  # before the teacher runs for half an hour
    start = start_unet(cfg.init_from) if cfg.init_from else None  # the same for a missing student
    make_trajectories(cfg, progress)
    device = training_device()
    torch.manual_seed(cfg.seed)
    states, cond, timesteps, captions = load_trajectories(Path(cfg.run_dir) / "trajectories")
    probs = torch.from_numpy(caption_weights([[c] for c in captions], cfg.focus)) if cfg.focus else None
    states, cond = states.to(device), cond.to(device)
    teacher = load_model(cfg.teacher, device=str(device), dtype="fp32")
    sched = teacher.scheduler_config
    a_bound = boundary_alphas(sched, timesteps).to(device)
    t_bound = torch.tensor(timesteps, device=device)
    student = (start if start is not None else copy.deepcopy(teacher.unet)).to(device).float()
    student = student.train().requires_grad_(True)
    del teacher
    ema = EMA(student, cfg.ema_decay)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    modules = {"unet": student, "ema": ema.module}
    run_dir = Path(cfg.run_dir)
    state = open_run(run_dir, cfg, modules, opt)
    log = RunLog(run_dir, cfg.steps, state.step, "distill", progress)
    gen = torch.Generator().manual_seed(cfg.seed * 1000003 + state.step)
    n, k = states.shape[0], len(timesteps)

    def step_loss(step: int):
        if probs is None:
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).to(device)
        else:
            idx = torch.multinomial(probs, cfg.batch_size, replacement=True, generator=gen).to(device)
        i = torch.randint(0, k, (cfg.batch_size,), generator=gen).to(device)
        loss = pair_loss(student, states[idx, i], states[idx, i + 1], t_bound[i], a_bound[i], a_bound[i + 1],
                         cond[idx].float(), cfg.detail_weight)
        return loss, {"lr": opt.param_groups[0]["lr"]}

    run_steps(state, cfg, modules, opt, log, step_loss, warmup=50, clip=1.0,
              after_step=lambda step: ema.update(student, step), log_every=10)
    return ema.module


FAST_DEFAULTS = {"steps": 4, "guidance": 1.0, "scheduler": "ddim"}


def export_student(cfg: DistillConfig, out: str | Path, notes: dict | None = None) -> Path:
    """Write the student as a model folder: its UNet (EMA weights, fp16) and scheduler, and a
    `noise2art.json` that names the teacher as its base (autoencoder, text encoder,
    vocabulary and companions come from there) and the student's own defaults."""
    import copy
    import shutil

    import diffusers

    from noise2art.engine.loading import load_model
    from noise2art.world.training.checkpoint import load_checkpoint

    teacher = load_model(cfg.teacher, device="cpu", dtype="fp32")
    student = copy.deepcopy(teacher.unet).float()
    meta = load_checkpoint(Path(cfg.run_dir) / "checkpoint", {"ema": student})
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    student.to(torch.float16).save_pretrained(tmp / "unet", safe_serialization=True)
    student_scheduler(teacher.scheduler_config).save_pretrained(tmp / "scheduler")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"]}
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    n_traj = len(list((Path(cfg.run_dir) / "trajectories").glob("*.safetensors")))
    spec = {"base": teacher.model_id, "defaults": FAST_DEFAULTS,
            "distillation": {"teacher": teacher.model_id, "teacher_steps": cfg.teacher_steps,
                             "teacher_guidance": cfg.teacher_guidance, "teacher_scheduler": "ddim",
                             "student_steps": cfg.student_steps, "trajectories": min(cfg.n_trajectories,
                                                                                      n_traj * cfg.chunk),
                             "steps": int(meta["step"]), "batch_size": cfg.batch_size, "lr": cfg.lr,
                             "ema_decay": cfg.ema_decay, "focus": cfg.focus,
                             **({"init_from": cfg.init_from} if cfg.init_from else {}),
                             **({"detail_weight": cfg.detail_weight} if cfg.detail_weight else {}),
                             **(notes or {})}}
    (tmp / "noise2art.json").write_text(json.dumps(spec, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
