"""Shared pieces of the training loops: device, logging, EMA, learning-rate schedule, run folders."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from noise2art.world.training.checkpoint import load_checkpoint, save_checkpoint


def training_device() -> torch.device:
    """A GPU when one is present (training never needs one)."""
    if torch.cuda.is_available():
        # TF32 matmuls: the precision loss is far below SGD noise, the speed-up is large.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


def cosine_lr(step: int, total: int, base: float, warmup: int = 100, floor: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class EMA:
    """Exponential moving average of a module's parameters (sampling uses the averaged weights)."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999):
        import copy

        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        # Warm up the decay so early averages are not dominated by the random init.
        d = min(self.decay, (1 + step) / (10 + step))
        # One fused call over all parameters: a per-tensor loop costs a kernel launch per
        # tensor, which dominates a small model's step on a GPU.
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in module.parameters()], 1 - d)
        for ema_b, b in zip(self.module.buffers(), module.buffers()):
            ema_b.copy_(b)


class RunLog:
    """Appends one JSON line per logged step to `run/log.jsonl` and shows a progress bar."""

    def __init__(self, run_dir: Path, total: int, start: int, desc: str, progress: bool = True):
        from tqdm import tqdm

        self.path = run_dir / "log.jsonl"
        self.bar = tqdm(total=total, initial=start, desc=desc, file=sys.stderr, disable=not progress, mininterval=2)
        self.t0 = time.time()

    def log(self, step: int, **values) -> None:
        values = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "time": round(time.time() - self.t0, 2), **values}) + "\n")
        self.bar.set_postfix({k: v for k, v in values.items() if isinstance(v, float)}, refresh=False)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


@dataclass
class StageConfig:
    """What every training stage has: its run folder, the rendered data it reads, and the
    optimisation's length, batch, rate, checkpoint interval and seed. A stage's config
    subclasses this, setting its own defaults and adding its own fields."""

    run_dir: str = "runs/stage"
    data_dir: str = "runs/data"
    n_images: int = 30000
    size: int = 64
    data_seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    checkpoint_every: int = 250
    seed: int = 0

    def load_data(self):
        """The stage's training set (`WorldData`), rendered on first use into `data_dir`."""
        from noise2art.world.training.data import prepare_data

        return prepare_data(self.data_dir, self.n_images, self.size, self.data_seed)


@dataclass
class RunState:
    step: int
    run_dir: Path


def open_run(run_dir: str | Path, config, modules: dict, optimizer) -> RunState:
    """Create the run folder or resume from its checkpoint; either way `config.json` is then
    the config the run goes on with (a resume may extend `steps` or change the focus)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint"
    step = 0
    if (ckpt / "state.json").is_file():
        step = int(load_checkpoint(ckpt, modules, optimizer)["step"])
        print(f"resuming {run_dir} at step {step}", file=sys.stderr)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    return RunState(step, run_dir)


def checkpoint(state: RunState, modules: dict, optimizer, step: int, extra: dict | None = None) -> None:
    save_checkpoint(state.run_dir / "checkpoint", modules, optimizer, step, extra)


def run_steps(state: RunState, cfg, modules: dict, optimizer, log: RunLog, step_loss, *, warmup: int = 100,
              clip: float | None = None, log_every: int = 25, after_step=None, extra: dict | None = None) -> None:
    """The loop every stage shares: cosine learning rate, one optimizer step per iteration,
    logging and checkpoints (every `cfg.checkpoint_every` steps and at the end).

    Args:
        step_loss: `step -> (loss, {name: value})` builds one batch and its loss.
        after_step: called with the step after the optimizer step (EMA updates).
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for step in range(state.step, cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, warmup=warmup)
        loss, values = step_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        log.advance()
        if step % log_every == 0 or step + 1 == cfg.steps:
            log.log(step, loss=loss.item(), **{k: float(v) for k, v in values.items()})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            checkpoint(state, modules, optimizer, step + 1, extra)
    log.close()
