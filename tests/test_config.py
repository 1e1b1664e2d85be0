"""Typed config: YAML round trip, overrides with type checks, clear errors for unknown keys and bad values."""

from __future__ import annotations

import pytest
import yaml

from pyseg.config import Config, apply_overrides, config_from_dict, load_config, save_config


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = Config()
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert not list(tmp_path.glob(".*tmp"))  # the temp file of the atomic write is gone


def test_partial_yaml_fills_defaults_and_name_from_stem(tmp_path):
    path = tmp_path / "exp1.yaml"
    path.write_text("optim:\n  lr: 3e-4\n  name: adamw\ndata:\n  batch_size: 8\n")
    cfg = load_config(path)
    assert cfg.name == "exp1"
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)  # "3e-4" is a str in YAML
    assert cfg.optim.name == "adamw"
    assert cfg.data.batch_size == 8 and cfg.data.image_size == Config().data.image_size


def test_overrides_types_and_nested_dicts():
    cfg = apply_overrides(Config(), ["optim.lr=1e-3", "train.epochs=7", "train.grad_clip=null",
                                     "model.kwargs.output_stride=8", "data.classes=[a, b]",
                                     "train.amp=bf16", "name=123", "optim.backbone_lr=1"])
    assert cfg.optim.lr == 1e-3
    assert cfg.train.epochs == 7 and cfg.train.grad_clip is None
    assert cfg.model.kwargs == {"output_stride": 8}
    assert cfg.data.classes == ["a", "b"]
    assert cfg.train.amp == "bf16"
    assert cfg.name == "123"  # a str field keeps the raw text
    assert cfg.optim.backbone_lr == 1.0 and isinstance(cfg.optim.backbone_lr, float)


def test_unknown_key_suggests_closest_and_lists_valid():
    with pytest.raises(ValueError) as e:
        apply_overrides(Config(), ["optim.lrr=0.1"])
    msg = str(e.value)
    assert "optim.lrr" in msg and "did you mean 'optim.lr'" in msg and "weight_decay" in msg
    with pytest.raises(ValueError, match="did you mean 'schedule'"):
        config_from_dict({"schedul": {}})
    with pytest.raises(ValueError, match="unknown key 'train.epoch'.*'train.epochs'"):
        config_from_dict({"train": {"epoch": 3}})


@pytest.mark.parametrize("item, match", [
    ("train.epochs=2.5", "train.epochs must be an int"),
    ("train.epochs=true", "train.epochs must be an int"),
    ("train.deterministic=1", "must be true or false"),
    ("optim.name=adm", r"one of \['adam', 'adamw', 'sgd'\].*did you mean 'adam'"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("optim.lr=-1", "optim.lr must be a float > 0"),
    ("train.epochs=0", "train.epochs must be an int >= 1"),
    ("schedule.gamma=1.5", r"schedule.gamma must be a float in \(0, 1\]"),
    ("train.device=tpu", "train.device must be"),
    ("optim.betas=[0.9]", "optim.betas must be two floats"),
    ("optim.lr.x=1", "optim.lr is a float, it has no sub-key 'x'"),
    ("noequals", "key.sub=value"),
])
def test_bad_values_raise_clear_errors(item, match):
    with pytest.raises((ValueError, TypeError), match=match):
        apply_overrides(Config(), [item])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(TypeError, match="top level must be a mapping"):
        load_config(bad)
    bad.write_text("optim: [1, 2]\n")
    with pytest.raises(TypeError, match="optim must be a mapping"):
        load_config(bad)
    bad.write_text("a: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)


def test_saved_yaml_is_plain(tmp_path):
    cfg = apply_overrides(Config(), ["model.kwargs.output_stride=16"])
    save_config(cfg, tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data["model"]["kwargs"] == {"output_stride": 16}
    assert set(data) == {"name", "data", "model", "optim", "schedule", "train", "early_stopping"}
