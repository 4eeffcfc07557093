"""TrainConfig: YAML recipes, dotted overrides, and one clear error per bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitlab.train import ConfigError, TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_recipes_load() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        assert isinstance(cfg, TrainConfig), path


def test_overrides() -> None:
    cfg = load_config(
        CONFIGS / "mnist.yaml",
        ["optim.lr=3e-4", "schedule.epochs=2", "augment.random_resized_crop=[0.5, 1]", "train.ema_decay=null"],
    )
    assert cfg.optim.lr == 3e-4 and cfg.schedule.epochs == 2
    assert cfg.augment.random_resized_crop == [0.5, 1.0] and cfg.train.ema_decay is None
    assert load_config(None, ["model.overrides.depth=3"]).model.overrides == {"depth": 3}


def test_round_trip() -> None:
    cfg = load_config(CONFIGS / "mnist.yaml")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], r"unknown key optim.lrr \(did you mean optim.lr\?\)"),
        (["optimizer.lr=1"], "unknown key optimizer"),
        (["optim.lr=fast"], "optim.lr must be float, got str 'fast'"),
        (["schedule.epochs=2.5"], "schedule.epochs must be int"),
        (["train.precision=fp16"], r"train.precision must be one of \['fp32', 'bf16'\]"),
        (["optim.lr=-1"], "optim.lr must be positive"),
        (["data.val_fraction=1.5"], r"data.val_fraction must be in \[0, 1\)"),
        (["schedule.warmup_epochs=20"], r"schedule.warmup_epochs must be in \[0, epochs\]"),
        (["train.batch_size=0"], "train.batch_size must be >= 1"),
        (["optim.lr"], "must look like key=value"),
        (["augment.random_resized_crop=[0.9, 0.1]"], "augment.random_resized_crop must be"),
    ],
)
def test_bad_values_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "mnist.yaml", overrides)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such recipe file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("optim:\n  lr: 1e-3\n  weight_decay: lots\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: optim.weight_decay must be float"):
        load_config(wrong)
