"""AdamOnLion against hand-computed steps, and its behaviour on simple problems."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from noise2art.errors import InvalidArgument
from noise2art.optim import AdamOnLion

GRADS = [
    [0.5, -1.0, 0.0, 2.0],
    [-0.3, -0.2, 0.1, 1.0],
    [0.4, 0.0, -0.7, -0.5],
]


def hand_computed(start, grads, lr=0.01, betas=(0.9, 0.999), gammas=(0.9, 0.99), eps=1e-3):
    """The update rule of docs/optimize.md, written out in plain Python floats."""
    p = list(start)
    n = len(p)
    m, v, m_lion = [0.0] * n, [0.0] * n, [0.0] * n
    (b1, b2), (g1, g2) = betas, gammas
    for t, g in enumerate(grads, start=1):
        m = [b1 * m[i] + (1 - b1) * g[i] for i in range(n)]
        v = [b2 * v[i] + (1 - b2) * g[i] ** 2 for i in range(n)]
        adam = [lr * (m[i] / (1 - b1**t)) / (math.sqrt(v[i] / (1 - b2**t)) + eps) for i in range(n)]
        mixed = [g1 * m_lion[i] + (1 - g1) * g[i] for i in range(n)]
        lion = [math.copysign(1.0, x) if x != 0 else 0.0 for x in mixed]
        adam_norm = math.sqrt(sum(x * x for x in adam))
        lion_norm = math.sqrt(sum(x * x for x in lion))
        p = [p[i] - lion[i] * adam_norm / lion_norm for i in range(n)]
        m_lion = [g2 * m_lion[i] + (1 - g2) * g[i] for i in range(n)]
    return p


def assert_matches(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def run(optimizer_kwargs, grads, start=(1.0, -2.0, 0.5, 0.0)):
    param = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    optimizer = AdamOnLion([param], **optimizer_kwargs)
    for grad in grads:
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
    return param.detach()


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_matches_hand_computed_steps(steps):
    expected = hand_computed((1.0, -2.0, 0.5, 0.0), GRADS[:steps])
    assert_matches(run({}, GRADS[:steps]), expected)


def test_first_step_by_hand():
    # Step 1: m_hat = g, v_hat = g^2, so adam_i = lr * g_i / (|g_i| + eps); the Lion
    # direction is sign(0.1 * g) = sign(g), of norm sqrt(3) (one zero entry).
    g = GRADS[0]
    adam_norm = math.sqrt(sum((0.01 * x / (abs(x) + 1e-3)) ** 2 for x in g))
    step = adam_norm / math.sqrt(3)
    expected = [1.0 - step, -2.0 + step, 0.5, 0.0 - step]
    assert_matches(run({}, GRADS[:1]), expected)


def test_other_hyperparameters_and_maximize():
    kwargs = dict(lr=0.05, betas=(0.8, 0.99), gammas=(0.5, 0.9), eps=1e-2)
    expected = hand_computed((1.0, -2.0, 0.5, 0.0), GRADS, **kwargs)
    assert_matches(run(kwargs, GRADS), expected)
    negated = [[-x for x in g] for g in GRADS]
    torch.testing.assert_close(run({"maximize": True}, negated), run({}, GRADS), rtol=0, atol=1e-12)


def test_quadratic_decreases():
    torch.manual_seed(0)
    target = torch.randn(8, 5)
    param = torch.nn.Parameter(torch.zeros(8, 5))
    optimizer = AdamOnLion([param], lr=0.05)

    def loss_fn():
        return ((param - target) ** 2).sum()

    initial = loss_fn().item()
    for _ in range(50):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    assert loss_fn().item() < 0.25 * initial


def test_closure_returns_the_loss():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = AdamOnLion([param])

    def closure():
        optimizer.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == pytest.approx(3.0)
    assert (param < 1).all()


def test_zero_gradient_does_not_move_or_nan():
    param = torch.nn.Parameter(torch.tensor([1.0, -1.0, 3.0]))
    optimizer = AdamOnLion([param])
    for _ in range(3):
        param.grad = torch.zeros(3)
        optimizer.step()
    assert torch.equal(param.detach(), torch.tensor([1.0, -1.0, 3.0]))
    state = optimizer.state[param]
    assert all(torch.isfinite(state[key]).all() for key in ("exp_avg", "exp_avg_sq", "lion_momentum"))
    # After a real gradient, zeros again still give finite updates.
    param.grad = torch.tensor([1.0, 0.0, -1.0])
    optimizer.step()
    param.grad = torch.zeros(3)
    optimizer.step()
    assert torch.isfinite(param).all()


def test_parameters_without_grad_are_skipped():
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = AdamOnLion([used, unused])
    used.grad = torch.ones(2)
    optimizer.step()
    assert torch.equal(unused.detach(), torch.ones(2)) and unused not in optimizer.state


def test_state_dict_round_trip():
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64))
    optimizer = AdamOnLion([param], lr=0.02)
    for grad in GRADS[:2]:
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()

    clone = torch.nn.Parameter(param.detach().clone())
    restored = AdamOnLion([clone])
    # A deep copy stands for a save and load: load_state_dict keeps tensors it need
    # not cast, so a shallow state would be shared with the original.
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert restored.param_groups[0]["lr"] == 0.02 and restored.state[clone]["step"] == 2

    for p, opt in ((param, optimizer), (clone, restored)):
        p.grad = torch.tensor(GRADS[2], dtype=torch.float64)
        opt.step()
    assert torch.equal(param.detach(), clone.detach())
    assert_matches(param.detach(), hand_computed((1.0, -2.0, 0.5, 0.0), GRADS, lr=0.02))


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=0.0), dict(lr=float("nan")), dict(eps=-1.0), dict(betas=(0.9, 1.0)), dict(gammas=(-0.1, 0.9)),
     dict(betas=(0.9,)), dict(weight_decay=-1.0)],
)
def test_invalid_hyperparameters(kwargs):
    with pytest.raises(InvalidArgument):
        AdamOnLion([torch.nn.Parameter(torch.ones(1))], **kwargs)
