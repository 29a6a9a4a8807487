"""A small UNet's forward pass replayed as a frozen TorchScript trace on the CPU.

At 64 px the embedded models' UNets compute little per call: on 2 CPU cores most of a
call's ~25 ms at batch 1 is Python and operator dispatch through diffusers' modules, not
arithmetic. A trace (`torch.jit.trace`, then `torch.jit.freeze`) replays the same
operators without the Python in about two thirds of the time, and its outputs are equal
to the module's bit for bit (tests/engine/test_tracing.py). Tracing one UNet at one input
shape costs about 0.8 s, so a call signature is traced once it has been called `after`
times (a long job pays it back; a one-image command does not trace), or at once when
asked (`Model.warm_up`, which the service runs before it takes requests).

A trace replays what it saw, so only calls it can replay exactly are traced:
- on the CPU, without gradients (sampling, never optimisation);
- a module with no forward hooks (a hook would silently stop firing);
- weights unchanged since tracing (in-place updates are seen through tensor versions;
  a changed module is traced again);
- a small UNet (`max_parameters`): a large one is compute-bound, so a trace saves
  nothing and costs seconds and memory.
A trace holds its own copy of the weights (about 45 MB for the embedded model's UNet), so
at most `max_traces` are kept; the least recently used goes first.
Anything else, and any trace that fails, runs the module as it is.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


class _Forward(torch.nn.Module):
    """The UNet call that sampling makes, as a module with positional tensor inputs."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, t, encoder_hidden_states=context, return_dict=False)[0]


def _signature(sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> tuple:
    """What a trace is specialised to: everything but the batch size. The spatial size
    picks branches in diffusers' UNet (upsampling to odd sizes); batch sizes from 64 on
    take a branch of their own in its upsamplers, so they get their own trace."""
    return (tuple(sample.shape[1:]), sample.dtype, tuple(context.shape[1:]), context.dtype,
            t.ndim, t.dtype, sample.shape[0] >= 64)


def _versions(module: torch.nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in module.parameters()) + tuple(b._version for b in module.buffers())


def _has_hooks(module: torch.nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


@dataclass
class _Entry:
    module: torch.nn.Module
    calls: int = 0
    traced: torch.jit.ScriptModule | None = None
    versions: tuple = ()
    failed: bool = False
    used: int = 0  # when its trace last ran, on the tracer's clock


@dataclass
class UNetTracer:
    """Traces of the UNets one model samples with, by module and call signature.

    Attributes:
        after: calls of one signature after which it is traced (0: at its first call;
            None: never, not even in `tracing_now`).
        max_parameters: UNets with more parameters are never traced.
        max_traces: traces kept at once (each holds a copy of its UNet's weights).
    """

    after: int | None = 64
    max_parameters: int = 20_000_000
    max_traces: int = 4
    _entries: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _forced: int = field(default=0, repr=False)
    _clock: int = field(default=0, repr=False)

    def wrap(self, unet: torch.nn.Module) -> torch.nn.Module | "TracedUNet":
        """`unet`, or a callable with its calling convention that replays traces of it
        where it can (a UNet on another device than the CPU, or too large, as it is)."""
        if self.after is None:
            return unet
        first = next(unet.parameters(), None)
        if first is None or first.device.type != "cpu":
            return unet
        if sum(p.numel() for p in unet.parameters()) > self.max_parameters:
            return unet
        return TracedUNet(unet, self)

    @contextmanager
    def tracing_now(self):
        """Within this block, every eligible call signature is traced at its first call."""
        with self._lock:
            self._forced += 1
        try:
            yield
        finally:
            with self._lock:
                self._forced -= 1

    @property
    def traced(self) -> int:
        """How many traces are held."""
        return sum(e.traced is not None for e in self._entries.values())

    def call(self, unet: torch.nn.Module, sample: torch.Tensor, t: torch.Tensor,
             context: torch.Tensor) -> torch.Tensor | None:
        """The UNet's output `[B, C, h, w]` from a trace, or None where the module must run
        itself (the caller then runs it)."""
        if torch.is_grad_enabled() or not isinstance(t, torch.Tensor) or _has_hooks(unet):
            return None
        key = (id(unet), _signature(sample, t, context))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.module is not unet:
                entry = self._entries[key] = _Entry(unet)
            entry.calls += 1
            if entry.failed:
                return None
            if entry.traced is not None and entry.versions != _versions(unet):
                entry.traced = None  # weights changed in place: trace them again
            if entry.traced is None:
                due = self.after is not None and (self._forced or entry.calls > self.after)
                if not due:
                    return None
                try:
                    with warnings.catch_warnings():
                        # Each branch it warns of is taken alike for every call of one
                        # signature (`_signature`).
                        warnings.simplefilter("ignore", torch.jit.TracerWarning)
                        traced = torch.jit.trace(_Forward(unet).eval(), (sample, t, context), check_trace=False)
                    self._make_room()
                    # Without the folds that move numerics (a convolution's following add
                    # or scale into its weights), so that a trace stays equal to the module.
                    entry.traced = torch.jit.freeze(traced, optimize_numerics=False)
                    entry.versions = _versions(unet)
                except Exception as e:  # a module a trace cannot capture runs as it is
                    log.warning("could not trace the UNet (%s); it runs untraced", e)
                    entry.failed = True
                    return None
            self._clock += 1
            entry.used = self._clock
            traced = entry.traced
        return traced(sample, t, context)

    def _make_room(self) -> None:
        """Drop least recently used traces until one more fits in `max_traces`."""
        held = sorted((e for e in self._entries.values() if e.traced is not None), key=lambda e: e.used)
        for entry in held[:max(0, len(held) - self.max_traces + 1)]:
            entry.traced, entry.calls = None, 0  # traced again only after `after` more calls


class TracedUNet:
    """Stands in for a UNet in `engine.sampling.denoise`: the same call, run from a trace
    where `UNetTracer.call` can, else by the module."""

    def __init__(self, unet: torch.nn.Module, tracer: UNetTracer):
        self.unet = unet
        self.tracer = tracer

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def __call__(self, sample, t, encoder_hidden_states=None, return_dict=True, **kwargs):
        if not kwargs and encoder_hidden_states is not None and not return_dict:
            out = self.tracer.call(self.unet, sample, t, encoder_hidden_states)
            if out is not None:
                return (out,)
        return self.unet(sample, t, encoder_hidden_states=encoder_hidden_states, return_dict=return_dict, **kwargs)
