"""Checkpoints: atomic save, weights-only load, RNG states, load_model rebuilding a pyseg model."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pyseg.training.checkpoint import (atomic_torch_save, get_rng_state, load_checkpoint, load_model,
                                       save_checkpoint, set_rng_state, unwrap_model)


def _draws():
    return random.random(), float(np.random.rand()), float(np.random.randn()), float(torch.rand(1))


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    state = get_rng_state()
    atomic_torch_save({"rng": state}, tmp_path / "rng.pt")
    first = _draws()
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    set_rng_state(loaded)
    assert _draws() == first


def test_set_rng_state_rejects_garbage():
    with pytest.raises(ValueError, match="python"):
        set_rng_state({"torch": torch.get_rng_state()})


def test_save_requires_keys_and_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck" / "last.pt"
    with pytest.raises(ValueError, match="missing keys"):
        save_checkpoint(path, {"model": {}})
    good = {"model": {"w": torch.ones(2)}, "model_name": "x", "model_kwargs": {}, "num_classes": 2}
    save_checkpoint(path, good)
    assert load_checkpoint(path)["model"]["w"].tolist() == [1.0, 1.0]

    # a crash in the middle of writing leaves the previous file intact and no temp file behind
    def boom(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, dict(good, model={"w": torch.zeros(2)}))
    monkeypatch.undo()
    assert load_checkpoint(path)["model"]["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not load"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a pyseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_load_model_rebuilds_pyseg_model(tmp_path):
    from pyseg.models import create_model

    torch.manual_seed(0)
    model = create_model("deeplabv3_resnet18", 3).eval()
    ddp_like = torch.nn.Module()
    ddp_like.module = model  # state dict keys gain a "module." prefix, as under DDP
    assert unwrap_model(ddp_like) is model
    state = ddp_like.state_dict()
    assert all(k.startswith("module.") for k in state)
    save_checkpoint(tmp_path / "m.pt", {"model": state, "model_name": "deeplabv3_resnet18", "model_kwargs": {},
                                        "num_classes": 3, "class_names": ["a", "b", "c"]})
    loaded, ckpt = load_model(tmp_path / "m.pt", map_location="cpu")
    assert ckpt["class_names"] == ["a", "b", "c"] and not loaded.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
