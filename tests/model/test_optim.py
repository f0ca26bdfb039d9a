"""Lion and AdamW with decoupled groups; cosine warm restarts stepped per iteration."""

from __future__ import annotations

import pytest
import torch
from timm.optim import Lion

from histosweep.model import TrainConfig
from histosweep.model._optim import build_optimizer, build_scheduler, step_scheduler


def _tiny() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )


@pytest.mark.parametrize(("name", "cls"), [("lion", Lion), ("adamw", torch.optim.AdamW)])
def test_optimizer_with_config_lr_and_no_decay_on_biases_and_norms(name, cls):
    cfg = TrainConfig(optimizer=name, lr=3e-4, weight_decay=0.05)
    opt = build_optimizer(_tiny(), cfg)
    assert type(opt) is cls
    # timm's factory orders the groups no-decay first; find them by their decay
    (decayed,) = [g for g in opt.param_groups if g["weight_decay"] == 0.05]
    (plain,) = [g for g in opt.param_groups if g["weight_decay"] == 0.0]
    assert len(opt.param_groups) == 2
    assert decayed["lr"] == plain["lr"] == 3e-4
    assert all(p.ndim == 2 for p in decayed["params"])
    assert all(p.ndim == 1 for p in plain["params"]) and len(plain["params"]) == 4


def test_lion_step_is_the_reference_update():
    """p <- p * (1 - lr * wd) - lr * sign(b1 * m + (1 - b1) * g); m <- b2 * m + (1 - b2) * g."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    opt = build_optimizer(net, cfg)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    momentum = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(5, 3)).pow(2).sum().backward()
        for name, p in net.named_parameters():
            wd = cfg.weight_decay if p.ndim > 1 else 0.0
            g, m = p.grad, momentum[name]
            before[name] = before[name] * (1 - cfg.lr * wd) - cfg.lr * torch.sign(0.9 * m + 0.1 * g)
            momentum[name] = 0.99 * m + 0.01 * g
        opt.step()
        for name, p in net.named_parameters():
            assert torch.allclose(p.detach(), before[name], atol=1e-7), name


def test_adamw_step_is_torch_adamw_on_the_same_groups():
    """optimizer = "adamw" is torch's AdamW (defaults) with decay on matrices only."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(net.state_dict())
    start = net.weight.detach().clone()
    cfg = TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=0.1)
    opt = build_optimizer(net, cfg)
    reference = torch.optim.AdamW(
        [{"params": [twin.weight], "weight_decay": 0.1}, {"params": [twin.bias], "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    for _ in range(3):
        x = torch.randn(5, 3)
        for model, optimizer in ((net, opt), (twin, reference)):
            optimizer.zero_grad()
            model(x).pow(2).sum().backward()
            optimizer.step()
    for (name, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-7), name
    assert not torch.allclose(net.weight, start, atol=1e-3)  # the comparison is not vacuous
    assert opt.state[net.weight]["step"] == 3  # AdamW's own state, not Lion's momentum only


def _lrs(cfg: TrainConfig, epochs: int, iters: int) -> list[float]:
    opt = build_optimizer(_tiny(), cfg)
    sched = build_scheduler(opt, cfg)
    return [step_scheduler(sched, e, i, iters) for e in range(epochs) for i in range(iters)]


def test_lr_restarts_to_max_at_iteration_t0_times_iters():
    cfg = TrainConfig(lr=1e-3, t0=2, t_mult=1)
    iters = 5
    lrs = _lrs(cfg, epochs=5, iters=iters)
    assert lrs[0] == pytest.approx(1e-3)
    first_cycle = lrs[: cfg.t0 * iters]
    assert all(a > b for a, b in zip(first_cycle, first_cycle[1:], strict=False))  # decays per step
    assert first_cycle[-1] < 0.05 * 1e-3
    assert lrs[cfg.t0 * iters] == pytest.approx(1e-3)  # restart exactly at epoch t0
    assert lrs[2 * cfg.t0 * iters] == pytest.approx(1e-3)
    assert lrs[iters] == pytest.approx(0.5e-3)  # halfway through a 2-epoch cosine


def test_t_mult_doubles_the_second_cycle():
    cfg = TrainConfig(lr=1e-3, t0=1, t_mult=2)
    iters = 4
    lrs = _lrs(cfg, epochs=4, iters=iters)
    assert lrs[iters] == pytest.approx(1e-3)  # restart after 1 epoch
    assert lrs[2 * iters] == pytest.approx(0.5e-3)  # mid-way through the 2-epoch cycle
    assert lrs[3 * iters] == pytest.approx(1e-3)  # next restart after 1 + 2 epochs
