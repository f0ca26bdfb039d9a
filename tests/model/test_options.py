"""Space options from timm: optimizer (lion | adamw), drop_path_rate (stochastic depth on the
image backbone) and ema_decay (ModelEmaV3 weights validated, kept and saved)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from histosweep.model import (
    TrainConfig,
    build_model,
    load_checkpoint,
    predict_probs,
    read_checkpoint_config,
    save_checkpoint,
    train_fold,
)
from histosweep.model._batches import effective_batches, epoch_order
from histosweep.model._bn import batchnorm_layers, recalibrate_batchnorm
from histosweep.model._fold_state import cpu_state_dict
from histosweep.model._trainer import _fit, _FoldRun
from tests.model.test_trainer import TINY, _oom_when, cache32, small_split, synth  # noqa: F401

OPTIONS = {"optimizer": "adamw", "drop_path_rate": 0.2, "ema_decay": 0.9}


def _drop_probs(module: torch.nn.Module) -> list[float]:
    from timm.layers import DropPath

    return [m.drop_prob for m in module.modules() if isinstance(m, DropPath)]


def test_drop_path_rate_reaches_the_image_backbone_only():
    cfg = TINY.replace(drop_path_rate=0.2)
    net = build_model(cfg)
    probs = _drop_probs(net.image_branch)
    # timm spreads the rate linearly over the blocks: the last block gets all of it
    assert probs and max(probs) == pytest.approx(0.2) and min(probs) > 0
    assert _drop_probs(net.mask_branch) == []
    assert _drop_probs(build_model(TINY).image_branch) == []  # 0.0: no DropPath at all


def test_drop_path_makes_training_forwards_stochastic():
    image = torch.rand(2, 3, 32, 32)  # (B, 3, H, W)
    outputs = {}
    for rate in (0.0, 0.5):
        torch.manual_seed(0)
        branch = build_model(TINY.replace(drop_path_rate=rate)).image_branch.train()
        outputs[rate] = [branch(image) for _ in range(2)]
        assert torch.equal(branch.eval()(image), branch(image))  # eval: DropPath is identity
    assert torch.equal(*outputs[0.0])  # ConvNeXt has LayerNorm only: deterministic without it
    assert not torch.equal(*outputs[0.5])


def test_new_fields_round_trip_through_checkpoints_and_old_configs(tmp_path):
    cfg = TINY.replace(**OPTIONS)
    path = tmp_path / "fold.safetensors"
    save_checkpoint(path, build_model(cfg), cfg)
    assert read_checkpoint_config(path) == cfg
    # none of them changes the state dict: a checkpoint loads against the default options
    model, loaded = load_checkpoint(path, expect=TINY)
    assert loaded == cfg and max(_drop_probs(model.image_branch)) == pytest.approx(0.2)
    # configs written before these fields existed read with today's behaviour
    old = {k: v for k, v in cfg.to_dict().items() if k not in OPTIONS}
    restored = TrainConfig.from_dict(old)
    assert (restored.optimizer, restored.drop_path_rate, restored.ema_decay) == ("lion", 0.0, 0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("optimizer", "sgd"), ("drop_path_rate", 1.0), ("drop_path_rate", -0.1), ("ema_decay", 1.0)],
)
def test_bad_option_values_are_config_errors(field, value):
    from histosweep.model import ConfigError

    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.slow
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_a_fold_trains_with_each_option(cache32, synth, small_split, option):  # noqa: F811
    cfg = TINY.replace(**{option: OPTIONS[option]})
    result = train_fold(cfg, cache32, synth[1], **small_split, progress=False)
    assert len(result.epochs) == 2 and result.config == cfg
    assert all(np.isfinite(m.train_loss) and np.isfinite(m.val_loss) for m in result.epochs)
    # the kept weights are the ones validated and used for the holdout
    holdout = small_split["holdout_idx"]
    net = result.model()
    probs = predict_probs(net, cache32.images[holdout], cache32.masks[holdout])
    assert np.allclose(result.holdout_probs, probs, atol=1e-6)


def _fit_directly(cfg, cache, labels, split) -> tuple[_FoldRun, object]:
    """What train_fold runs, with the _FoldRun kept to look at its raw and EMA networks."""
    splits = {k: np.asarray(v, dtype=np.int64) for k, v in split.items()}
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        run = _FoldRun(
            cfg, cache, labels, splits, torch.device("cpu"), progress=False, desc="", num_classes=4
        )
        _, chosen, _ = _fit(run, None)
    return run, chosen


def test_ema_weights_are_validated_recalibrated_kept_and_saved(
    cache32, synth, small_split, tmp_path  # noqa: F811
):
    cfg = TINY.replace(ema_decay=0.9, keep="last")
    run, chosen = _fit_directly(cfg, cache32, synth[1], small_split)
    ema_state = cpu_state_dict(run.ema.module)
    raw_state = cpu_state_dict(run.model)
    assert run.optimizer_steps == 4  # 2 epochs x 2 steps of 4 rows
    # the saved checkpoint holds the EMA's weights, not the raw model's
    path = tmp_path / "fold.safetensors"
    save_checkpoint(path, chosen.state, cfg, num_classes=4)
    saved = load_checkpoint(path, expect=cfg)[0].state_dict()
    assert saved.keys() == ema_state.keys()
    assert all(torch.equal(saved[k], ema_state[k]) for k in ema_state)
    weights = [k for k in raw_state if k.endswith(".weight")]
    assert any(not torch.equal(saved[k], raw_state[k]) for k in weights)
    # validation ran on the EMA weights
    val = small_split["val_idx"]
    ema_probs = predict_probs(run.ema.module, cache32.images[val], cache32.masks[val])
    raw_probs = predict_probs(run.model, cache32.images[val], cache32.masks[val])
    assert np.allclose(chosen.val_probs, ema_probs, atol=1e-6)
    assert not np.allclose(chosen.val_probs, raw_probs, atol=1e-6)
    # its BatchNorm stats are the recalibrated ones: recalibrating again reproduces them
    again = copy.deepcopy(run.ema.module)
    rows = epoch_order(run.train_idx, seed=cfg.seed, epoch=cfg.epochs - 1, stream=1)
    batches = effective_batches(rows[: cfg.bn_recalibration_images], run.eval_batch_size())
    recalibrate_batchnorm(again, run._eval_inputs(batches))
    ema_bns = batchnorm_layers(run.ema.module)
    for ours, theirs in zip(ema_bns, batchnorm_layers(again), strict=True):
        assert torch.equal(ours.running_mean, theirs.running_mean)
        assert torch.equal(ours.running_var, theirs.running_var)
    assert not torch.equal(batchnorm_layers(run.model)[0].running_var, ema_bns[0].running_var)


@pytest.mark.slow
def test_oom_rerun_restores_the_ema_exactly(cache32, synth, small_split, monkeypatch):  # noqa: F811
    labels = synth[1]
    cfg = TINY.replace(batch_size=4, accumulation=1, ema_decay=0.9)
    reference = train_fold(
        cfg.replace(accumulation=2), cache32, labels, **small_split, progress=False
    )
    # the 2nd full-size forward fails: one optimizer step and one EMA update are rolled back
    _oom_when(monkeypatch, lambda rows, n: rows > 2 and n >= 2)
    result = train_fold(cfg, cache32, labels, **small_split, progress=False)
    assert len(result.oom_events) == 1 and result.oom_events[0]["restored"] is True
    for key, value in reference.state_dict.items():
        assert torch.equal(value, result.state_dict[key]), key
