"""The "Adam on Lion" optimiser of the embedding-optimisation reference.

Follows Deckers et al., "Manipulating Embeddings of Stable Diffusion Prompts"
(IJCAI 2024) and its public code (docs/optimize.md): Lion's sign direction (Chen et
al., "Symbolic Discovery of Optimization Algorithms", 2023) with the step length of
Adam. The sign makes every coordinate move; Adam's adaptive length keeps the total
step small where gradients are small or noisy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from noise2art.errors import InvalidArgument


class AdamOnLion(Optimizer):
    """Adam step length, Lion step direction.

    For each parameter tensor ``p`` with gradient ``g`` at step ``t`` (1-based)::

        m = beta1 * m + (1 - beta1) * g                 # Adam moments
        v = beta2 * v + (1 - beta2) * g**2
        adam = lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
        lion = sign(gamma1 * m_lion + (1 - gamma1) * g)
        p = p - lion * ||adam||_2 / ||lion||_2          # norms over the whole tensor
        m_lion = gamma2 * m_lion + (1 - gamma2) * g

    With ``maximize=True`` ``g`` is the negated gradient (ascent, as in torch's
    optimisers). ``weight_decay`` adds ``weight_decay * p`` to ``g`` (coupled, as the
    reference does). When ``lion`` is all zero (a zero gradient on a fresh state) the
    parameter does not move. Defaults are the reference's: lr 0.01, eps 1e-3,
    betas (0.9, 0.999), gammas (0.9, 0.99).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        gammas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ):
        _check_positive("lr", lr)
        _check_positive("eps", eps)
        _check_coefficients("betas", betas)
        _check_coefficients("gammas", gammas)
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise InvalidArgument("weight_decay", f"must be a finite number >= 0, got {weight_decay!r}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            gammas=tuple(gammas),
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("weight_decay", 0.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise InvalidArgument("params", "AdamOnLion does not support sparse gradients")
                self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        gamma1, gamma2 = group["gammas"]
        grad = -param.grad if group["maximize"] else param.grad
        if group["weight_decay"]:
            grad = grad.add(param, alpha=group["weight_decay"])

        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["lion_momentum"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"]
        exp_avg, exp_avg_sq, lion_momentum = state["exp_avg"], state["exp_avg_sq"], state["lion_momentum"]

        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_hat = exp_avg / (1 - beta1**step)
        v_hat = exp_avg_sq / (1 - beta2**step)
        adam_step = group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])

        direction = (gamma1 * lion_momentum + (1 - gamma1) * grad).sign()
        # ||sign(.)|| is 0 or >= 1, so clamping at 1 changes nothing except the
        # all-zero case, where it avoids 0/0 and the update stays exactly zero.
        scale = torch.linalg.vector_norm(adam_step) / torch.linalg.vector_norm(direction).clamp_min(1.0)
        param.sub_(direction * scale)

        lion_momentum.mul_(gamma2).add_(grad, alpha=1 - gamma2)


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise InvalidArgument(name, f"must be a finite number > 0, got {value!r}")


def _check_coefficients(name: str, values: tuple[float, float]) -> None:
    if len(values) != 2 or not all(isinstance(v, int | float) and 0.0 <= v < 1.0 for v in values):
        raise InvalidArgument(name, f"must be two numbers in [0, 1), got {values!r}")
