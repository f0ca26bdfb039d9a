"""train_fold on the synthetic dataset: it learns, is deterministic, stops on request, keeps the
right weights, and survives CUDA out-of-memory by halving the micro-batch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from histosweep.model import (
    DualBranchNet,
    EpochMetrics,
    ModelError,
    TrainConfig,
    predict_probs,
    train_fold,
)
from histosweep.model._fold_state import FoldState

TINY = TrainConfig(
    resolution=32,
    image_backbone="convnext_atto",
    mask_backbone="resnet10t",
    head_hidden=32,
    epochs=2,
    batch_size=4,
    lr=1e-3,
    t0=2,
    bn_recalibration_images=8,
)


@pytest.fixture(scope="module")
def synth(synth_root):
    from histosweep.data import load_dataset

    ds = load_dataset(synth_root)
    return ds, ds.labels()


@pytest.fixture(scope="module")
def cache32(synth):
    from histosweep.data import open_cache

    return open_cache(synth[0], 32, "stretch", progress=False)


@pytest.fixture(scope="module")
def small_split(synth):
    """8 train / 4 val / 3 holdout rows, every class in train (2 steps of 4 per epoch)."""
    labels = synth[1]
    rng = np.random.default_rng(0)
    rows = [rng.permutation(np.flatnonzero(labels == c)) for c in range(4)]
    train = np.concatenate([r[:2] for r in rows])
    val = np.concatenate([r[2:3] for r in rows])
    holdout = np.concatenate([r[3:4] for r in rows[:3]])
    return {"train_idx": train, "val_idx": val, "holdout_idx": holdout}


def _losses(result) -> list[tuple]:
    return [(m.epoch, m.train_loss, m.val_loss, m.val_f1, m.lr) for m in result.epochs]


@pytest.mark.slow
def test_fold_learns_the_synthetic_signal_at_64px(synth, synth_root):
    """64 px, 5 epochs from scratch: training-set macro-F1 far above chance (0.25)."""
    from histosweep.data import open_cache

    ds, labels = synth
    cache = open_cache(ds, 64, "stretch", progress=False)
    rng = np.random.default_rng(1)
    order = [rng.permutation(np.flatnonzero(labels == c)) for c in range(4)]
    val = np.concatenate([r[:4] for r in order])  # 16 (4 per class)
    holdout = np.concatenate([r[4:6] for r in order])  # 8
    train = np.setdiff1d(np.arange(len(labels)), np.concatenate([val, holdout]))  # 40
    cfg = TINY.replace(
        resolution=64,
        head_hidden=64,
        dropout=0.1,
        epochs=5,
        t0=5,
        batch_size=8,
        color_jitter_prob=0.0,
        cutmix_prob=0.0,
        bn_recalibration_images=256,
    )
    result = train_fold(
        cfg, cache, labels, train_idx=train, val_idx=val, holdout_idx=holdout, progress=False
    )
    train_probs = predict_probs(result.model(), cache.images[train], cache.masks[train])
    train_f1 = f1_score(labels[train], train_probs.argmax(1), average="macro")
    assert train_f1 > 0.6, (train_f1, result.epochs)
    assert result.epochs[-1].train_loss < 0.8 * result.epochs[0].train_loss
    assert max(m.val_f1 for m in result.epochs) > 0.35, result.epochs
    assert result.holdout_probs.shape == (8, 4)


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_metrics(cache32, synth, small_split):
    labels = synth[1]
    cfg = TINY.replace(cutmix_prob=0.5, color_jitter_prob=0.8, dropout=0.3)
    runs = [
        train_fold(c, cache32, labels, **small_split, progress=False)
        for c in (cfg, cfg, cfg.replace(seed=1))
    ]
    assert _losses(runs[0]) == _losses(runs[1])
    for key, value in runs[0].state_dict.items():
        assert torch.equal(value, runs[1].state_dict[key]), key
    assert np.array_equal(runs[0].holdout_probs, runs[1].holdout_probs)
    assert _losses(runs[0]) != _losses(runs[2])


@pytest.mark.slow
def test_recalibration_size_changes_only_the_statistics_evaluation_reads(cache32, synth, small_split):
    """Why bench/bn_recal.py can compare sizes seed by seed: training normalises with batch
    statistics, so the learned weights and the training losses do not depend on the size."""
    cfg = TINY.replace(keep="last", dropout=0.3)
    off, small, full = (
        train_fold(cfg.replace(bn_recalibration_images=n), cache32, synth[1], **small_split,
                   progress=False)
        for n in (0, 2, 8)
    )
    for run in (small, full):
        assert [m.train_loss for m in run.epochs] == [m.train_loss for m in off.epochs]
        stats = [k for k in off.state_dict if not torch.equal(off.state_dict[k], run.state_dict[k])]
        assert stats and all(k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                             for k in stats), stats
    assert not all(torch.equal(small.state_dict[k], full.state_dict[k]) for k in small.state_dict)


def test_later_folds_start_from_a_copy_of_the_first_build_and_compute_the_same(
    cache32, synth, small_split
):
    """A trial's folds after the first copy the network built for the first (model/_initial.py)
    and restore the generator states that build left: bit for bit what a fresh build trains."""
    from histosweep.model._initial import initial_models

    cfg = TINY.replace(keep="last", dropout=0.3, drop_path_rate=0.2, seed=7)  # draws from torch's RNG
    initial_models.clear()
    cold = train_fold(cfg, cache32, synth[1], **small_split, progress=False)
    hits = initial_models.hits
    warm = train_fold(cfg, cache32, synth[1], **small_split, progress=False)
    assert initial_models.hits == hits + 1  # the second fold did not build
    assert _losses(warm) == _losses(cold)
    assert all(torch.equal(warm.state_dict[k], cold.state_dict[k]) for k in cold.state_dict)
    np.testing.assert_array_equal(warm.holdout_probs, cold.holdout_probs)
    other = train_fold(cfg.replace(seed=8), cache32, synth[1], **small_split, progress=False)
    assert initial_models.hits == hits + 1  # another seed is another network: built anew
    assert _losses(other) != _losses(cold)


def test_cpu_predicts_in_larger_batches_with_the_same_probabilities(cache32, synth, small_split):
    """Validation/holdout batches on the CPU hold CPU_PREDICT_PIXELS (faster per image); the
    probabilities match the eval batch's to float precision; recalibration keeps eval's batch."""
    from histosweep.model._predict import probs_for_rows
    from histosweep.model._trainer import CPU_PREDICT_PIXELS, _FoldRun

    run = _FoldRun(TINY, cache32, synth[1], small_split, torch.device("cpu"), progress=False,
                   desc="", num_classes=4)
    assert run.eval_batch_size() == 2 * TINY.batch_size
    assert run.predict_batch_size() == CPU_PREDICT_PIXELS // 32**2 > run.eval_batch_size()
    rows = np.arange(len(synth[1]))
    small = probs_for_rows(run.eval_model, run.holdout_source, rows,
                           batch_size=run.eval_batch_size())
    large = run.predict_rows(run.holdout_source, rows)
    np.testing.assert_allclose(large, small, rtol=0, atol=1e-6)
    big = _FoldRun(TINY.replace(resolution=384), cache32, synth[1], small_split,
                   torch.device("cpu"), progress=False, desc="", num_classes=4)
    assert big.predict_batch_size() == big.eval_batch_size()  # 384 px: no larger than eval's


def test_on_epoch_true_stops_after_that_epoch(cache32, synth, small_split, capsys):
    seen: list[EpochMetrics] = []

    def stop_at_second(metrics: EpochMetrics) -> bool:
        seen.append(metrics)
        return metrics.epoch == 1

    cfg = TINY.replace(epochs=4, t0=4)
    torch.manual_seed(42)
    expected_draw = torch.rand(1)
    torch.manual_seed(42)
    no_holdout = dict(small_split, holdout_idx=[])
    result = train_fold(
        cfg, cache32, synth[1], **no_holdout, on_epoch=stop_at_second, desc="fold 3"
    )
    assert torch.equal(torch.rand(1), expected_draw)  # the caller's RNG stream is untouched
    assert [m.epoch for m in seen] == [0, 1]
    assert result.stopped and len(result.epochs) == 2
    assert result.epochs == seen
    for m in seen:
        assert np.isfinite([m.train_loss, m.val_loss, m.val_f1, m.lr]).all()
        assert m.seconds > 0 and m.images_per_s > 0 and 0 <= m.val_f1 <= 1
    assert "fold 3 epoch 2/4" in capsys.readouterr().err  # tqdm bar names fold and epoch
    assert result.device == "cpu" and result.seconds > 0 and result.oom_events == []
    assert result.holdout_probs.shape == (0, 4)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_kept_weights_reproduce_val_and_holdout_probs(cache32, synth, small_split, keep):
    labels = synth[1]
    f1s = iter([0.5, 0.5, 0.25])  # forced val F1 per epoch: a tie, then worse

    cfg = TINY.replace(epochs=3, t0=3, keep=keep)
    import histosweep.model._trainer as trainer

    original = trainer.macro_f1
    try:
        trainer.macro_f1 = lambda *a, **k: next(f1s)
        result = train_fold(cfg, cache32, labels, **small_split, progress=False)
    finally:
        trainer.macro_f1 = original
    assert result.best_epoch == (0 if keep == "best" else 2)  # ties -> the earlier epoch
    assert result.best_val_f1 == (0.5 if keep == "best" else 0.25)
    net = result.model()
    assert isinstance(net, DualBranchNet) and not net.training
    val, holdout = small_split["val_idx"], small_split["holdout_idx"]
    val_probs = predict_probs(net, cache32.images[val], cache32.masks[val])
    assert np.allclose(result.val_probs, val_probs, atol=1e-6)
    holdout_probs = predict_probs(net, cache32.images[holdout], cache32.masks[holdout])
    assert np.allclose(result.holdout_probs, holdout_probs, atol=1e-6)
    assert result.val_probs.shape == (4, 4) and result.holdout_probs.shape == (3, 4)
    assert all(t.device.type == "cpu" for t in result.state_dict.values())


def _oom_when(monkeypatch, should_fail):
    """Make training forwards raise CUDA OOM when should_fail(batch_rows, call_no) is true."""
    original = DualBranchNet.forward
    calls = {"n": 0}

    def forward(self, image, mask):
        if self.training:
            calls["n"] += 1
            if should_fail(image.shape[0], calls["n"]):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. (simulated)")
        return original(self, image, mask)

    monkeypatch.setattr(DualBranchNet, "forward", forward)
    return calls


@pytest.mark.slow
def test_oom_halves_the_micro_batch_and_reruns_the_epoch_exactly(
    cache32, synth, small_split, monkeypatch
):
    labels = synth[1]
    cfg = TINY.replace(batch_size=4, accumulation=1, cutmix_prob=0.5)
    reference = train_fold(
        cfg.replace(accumulation=2), cache32, labels, **small_split, progress=False
    )
    # the 2nd full-size forward fails: one optimizer step must be rolled back
    _oom_when(monkeypatch, lambda rows, n: rows > 2 and n >= 2)
    result = train_fold(cfg, cache32, labels, **small_split, progress=False)
    assert len(result.oom_events) == 1
    event = result.oom_events[0]
    assert event["epoch"] == 0 and event["micro_batch_before"] == 4
    assert event["micro_batch_after"] == 2 and event["accumulation"] == 2
    assert event["restored"] is True
    assert _losses(result) == _losses(reference)
    for key, value in reference.state_dict.items():
        assert torch.equal(value, result.state_dict[key]), key


def test_oom_after_a_proven_epoch_reruns_without_a_snapshot(cache32, synth, small_split, monkeypatch):
    cfg = TINY.replace(batch_size=4, accumulation=1, epochs=3)
    captures = {"n": 0}
    original_capture = FoldState.capture.__func__

    def capture(cls, run):
        captures["n"] += 1
        return original_capture(cls, run)

    monkeypatch.setattr(FoldState, "capture", classmethod(capture))
    # epoch 0 runs through at micro-batch 4 (2 steps of 4 rows); the next full-size forward fails
    calls = _oom_when(monkeypatch, lambda rows, n: rows > 2 and n >= 3)
    result = train_fold(cfg, cache32, synth[1], **small_split, progress=False)
    assert [e["epoch"] for e in result.oom_events] == [1]
    assert result.oom_events[0]["restored"] is False and result.oom_events[0]["micro_batch_after"] == 2
    assert captures["n"] == 1  # epoch 0 only: 4 proven there, 2 proven by the rerun of epoch 1
    assert len(result.epochs) == 3 and calls["n"] > 3
    assert all(np.isfinite(e.train_loss) for e in result.epochs)


def test_oom_at_the_smallest_micro_batch_is_a_model_error(cache32, synth, small_split, monkeypatch):
    _oom_when(monkeypatch, lambda rows, n: True)
    with pytest.raises(ModelError, match="out of memory at micro-batch 2.*convnext_atto"):
        train_fold(TINY, cache32, synth[1], **small_split, progress=False)


def test_bad_inputs_are_model_errors(cache32, synth, small_split):
    labels = synth[1]
    with pytest.raises(ModelError, match="32 px/stretch.*64 px"):
        train_fold(TINY.replace(resolution=64), cache32, labels, **small_split)
    bad = dict(small_split, val_idx=np.array([], dtype=np.int64))
    with pytest.raises(ModelError, match="validation row"):
        train_fold(TINY, cache32, labels, **bad)
    bad = dict(small_split, train_idx=np.array([0, 10_000]))
    with pytest.raises(ModelError, match="train_idx"):
        train_fold(TINY, cache32, labels, **bad)
    with pytest.raises(ModelError, match="labels"):
        train_fold(TINY, cache32, labels[:-1], **small_split)


def test_epoch_metrics_and_fold_result_fields():
    assert [f.name for f in dataclasses.fields(EpochMetrics)] == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_f1",
        "lr",
        "seconds",
        "images_per_s",
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fold_uses_bf16_staged_rows(cache32, synth, small_split):
    """GPU path: rows staged on the device, bf16 autocast, channels_last; CPU tensors out."""
    result = train_fold(TINY, cache32, synth[1], **small_split, device="cuda", progress=False)
    assert result.device.startswith("cuda")
    assert np.isfinite(result.val_probs).all() and np.allclose(result.holdout_probs.sum(1), 1)
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in result.state_dict.values())
    net = result.model()
    cpu_probs = predict_probs(
        net, cache32.images[small_split["val_idx"]], cache32.masks[small_split["val_idx"]]
    )
    assert np.abs(cpu_probs - result.val_probs).max() < 0.05  # bf16 vs fp32
