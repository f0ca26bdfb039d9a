"""Space-file validation: every error is one clear line naming the file, key and fix."""

from __future__ import annotations

import optuna
import pytest

from histosweep.model import TrainConfig
from histosweep.search import Space, SpaceError, load_space


def write(tmp_path, body: str):
    path = tmp_path / "space.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[params]\nlearning_rate = 0.1\n", "did you mean 'lr'"),
        ("[params]\nresolutoin = [224]\n", "did you mean 'resolution'"),
        ("[params]\nlr = { low = 1e-2, high = 1e-4 }\n", "low 0.01 > high 0.0001"),
        ("[params]\nresolution = []\n", "empty list"),
        ("[params]\nlr = { low = 0.0, high = 1e-3, log = true }\n", "log ranges need low > 0"),
        ("[params]\nresolution = [224, \"big\"]\n", "resolution must be int"),
        ("[params]\npretrained = \"yes\"\n", "pretrained must be bool"),
        ("[params]\nepochs = 2.5\n", "epochs must be int"),
        ("[params]\ndropout = { low = 0.1, high = 1.5 }\n", "dropout = 1.5 is not allowed"),
        ("[params]\nresize_mode = [\"stretch\", \"zoom\"]\n", "resize_mode"),
        ("[params]\nlr = { low = 1e-5, hi = 1e-3 }\n", "needs low and high"),
        ("[params]\nimage_backbone = { low = 1, high = 2 }\n", "not a range"),
        ("lr = 0.1\n", "expected one [params] table"),
        ("[params\nlr = 1\n", "not valid TOML"),
        ("[params]\nepochs = { low = 2, high = 10, step = 0.5 }\n", "epochs is an integer range but has step 0.5"),
        ("[params]\nbatch_size = { low = 8, high = 32, step = 4.5 }\n", "use a whole number step"),
        ("[params]\nseed = [0, 1, 2]\n", "seed cannot be searched"),
        ("[params]\nseed = { low = 0, high = 9 }\n", "create --seed"),
    ],
)
def test_space_errors_name_the_file_and_key(tmp_path, body, needle):
    path = write(tmp_path, body)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert needle in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_space_file_is_named(tmp_path):
    with pytest.raises(SpaceError, match="nope.toml not found"):
        load_space(tmp_path / "nope.toml")
    with pytest.raises(SpaceError, match=f"space file {tmp_path} is a folder; pass --space with the path"):
        load_space(tmp_path)


def test_default_space_centres_the_reference_recipe():
    space = load_space()
    p = space.params
    assert 384 in p["resolution"].choices
    assert "convnext_tiny" in p["image_backbone"].choices
    assert "ensemble_top_k" not in p and "ensemble_temperature" not in p  # searched at export
    assert p["color_jitter_prob"].low <= 0.8 <= p["color_jitter_prob"].high
    assert 0.0 in p["cutmix_prob"].choices and 1.0 in p["cutmix_prob"].choices
    for key in ("lr", "weight_decay", "label_smoothing", "dropout", "cutmix_alpha",
                "resize_mode", "mask_backbone"):
        assert p[key].kind != "fixed", key


def test_space_suggests_typed_config_and_round_trips():
    space = load_space()
    again = Space.from_dict(space.to_dict())
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    cfg = again.suggest(trial)
    assert isinstance(cfg, TrainConfig)
    assert isinstance(cfg.resolution, int) and cfg.resolution in (224, 384, 512)
    assert 1e-5 <= cfg.lr <= 3e-4
    assert set(trial.params) == set(space.searched())


def test_fixed_keys_keep_defaults_and_values(tmp_path):
    space = load_space(write(tmp_path, "[params]\nepochs = 7\nlr = { low = 1e-4, high = 1e-3, log = true }\n"))
    assert space.searched() == ["lr"]
    cfg = space.fixed_config()
    assert cfg.epochs == 7 and cfg.batch_size == TrainConfig().batch_size


@pytest.mark.parametrize("key", ["ensemble_top_k", "ensemble_temperature"])
def test_ensemble_keys_say_where_ensemble_weighting_went(tmp_path, key):
    path = tmp_path / "old.toml"
    path.write_text(f"[params]\nresolution = 64\n{key} = [1, 2]\n")
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert str(path) in message and key in message
    assert "export-best" in message and "--candidates" in message
    assert "\n" not in message


def test_max_epochs_is_the_largest_epochs_a_trial_can_pick(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[params]\nepochs = { low = 2, high = 7 }\n")
    assert load_space(path).max_epochs() == 7
    path.write_text("[params]\nepochs = [3, 9, 4]\n")
    assert load_space(path).max_epochs() == 9
    path.write_text("[params]\nepochs = 5\n")
    assert load_space(path).max_epochs() == 5


def test_timm_options_are_space_keys(tmp_path):
    from histosweep.search import reference_params

    space = load_space(write(tmp_path, (
        '[params]\noptimizer = ["adamw", "lion"]\n'
        "drop_path_rate = { low = 0.0, high = 0.3 }\nema_decay = [0.0, 0.999]\n"
    )))
    assert set(space.searched()) == {"optimizer", "drop_path_rate", "ema_decay"}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    cfgs = [space.suggest(study.ask()) for _ in range(12)]
    assert {c.optimizer for c in cfgs} == {"lion", "adamw"}
    assert {c.ema_decay for c in cfgs} == {0.0, 0.999}
    assert all(isinstance(c.drop_path_rate, float) and 0 <= c.drop_path_rate <= 0.3 for c in cfgs)
    assert len({c.drop_path_rate for c in cfgs}) > 1
    # the reference recipe (Lion, neither stochastic depth nor EMA) is a point of such a space
    params, skipped = reference_params(space)
    assert params == {"optimizer": "lion", "drop_path_rate": 0.0, "ema_decay": 0.0} and not skipped
    fixed = load_space(write(tmp_path, "[params]\nepochs = 3\n")).fixed_config()
    assert (fixed.optimizer, fixed.drop_path_rate, fixed.ema_decay) == ("lion", 0.0, 0.0)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[params]\noptimizer = ["lion", "sgd"]\n', "optimizer = 'sgd' is not allowed"),
        ("[params]\noptimizer = { low = 0, high = 1 }\n", "not a range"),
        ("[params]\noptimizer = 1\n", "optimizer must be str"),
        ("[params]\ndrop_path_rate = { low = 0.0, high = 1.0 }\n", "drop_path_rate = 1.0 is not allowed"),
        ("[params]\ndrop_path_rate = -0.1\n", "drop_path_rate must be in [0, 1)"),
        ("[params]\nema_decay = [0.0, 1.0]\n", "ema_decay = 1.0 is not allowed"),
        ('[params]\nema_decay = "0.999"\n', "ema_decay must be float"),
        ('[params]\nopt = "adamw"\n', "did you mean 'optimizer'"),
        ("[params]\ndrop_path = 0.1\n", "did you mean 'drop_path_rate'"),
        ("[params]\nmodel_ema_decay = 0.999\n", "did you mean 'ema_decay'"),
    ],
)
def test_timm_option_errors_are_one_line(tmp_path, body, needle):
    path = write(tmp_path, body)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message
