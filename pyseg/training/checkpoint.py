"""Checkpoints: plain dicts written atomically with ``torch.save``; RNG state capture and restore.

Keys (agreed across pyseg): "model" (state_dict, without a DDP "module." prefix), "model_name",
"model_kwargs", "crf" (the CRF layer's spec when trained with one, ``model.crf``; else absent or None),
"num_classes", "class_names", "config" (resolved config as a plain dict), "epoch" (number of finished epochs), "optimizer", "scheduler", "scaler", "rng", "metrics", "best_miou",
"pyseg_version". Everything stored is loadable with ``torch.load(weights_only=True)``: the RNG states
are kept as tensors, ints and lists, never as pickled numpy objects.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from pyseg.fileio import atomic_write

REQUIRED_KEYS = ("model", "model_name", "model_kwargs", "num_classes")
ALL_KEYS = ("model", "model_name", "model_kwargs", "num_classes", "class_names", "config", "epoch",
            "optimizer", "scheduler", "scaler", "rng", "metrics", "best_miou", "pyseg_version")


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def get_rng_state() -> dict:
    """RNG states of python ``random``, numpy's global generator, torch CPU and CUDA (if initialised)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    rng = {
        "python": [version, list(state), gauss],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def set_rng_state(rng: dict) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only where the device count matches)."""
    if not isinstance(rng, dict) or not {"python", "numpy", "torch"} <= set(rng):
        raise ValueError("rng state must be a dict with 'python', 'numpy' and 'torch' entries "
                         f"(from get_rng_state), got {type(rng).__name__}")
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    n = rng["numpy"]
    np.random.set_state({
        "bit_generator": n["bit_generator"],
        "state": {"key": np.asarray(n["key"].numpy() if torch.is_tensor(n["key"]) else n["key"],
                                    dtype=np.uint32),
                  "pos": int(n["pos"])},
        "has_gauss": int(n["has_gauss"]),
        "gauss": float(n["gauss"]),
    })
    torch.set_rng_state(rng["torch"].cpu() if torch.is_tensor(rng["torch"]) else torch.as_tensor(rng["torch"]))
    cuda = rng.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> None:
    """Check the required keys and save ``ckpt`` atomically."""
    if not isinstance(ckpt, dict):
        raise TypeError(f"checkpoint must be a dict, got {type(ckpt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint is missing keys {missing}; required: {list(REQUIRED_KEYS)}")
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint dict (``weights_only=True``); clear errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, or a pickle with arbitrary objects
        raise ValueError(f"could not load checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a pyseg checkpoint: expected keys {list(REQUIRED_KEYS)}, found {keys}")
    return ckpt


def load_model(path: str | os.PathLike, map_location="cpu"):
    """Rebuild the model of a checkpoint with ``pyseg.models.create_model`` and load its weights.

    Returns ``(model, ckpt)``; the model is in eval mode on ``map_location``.
    """
    from pyseg.models import create_model
    from pyseg.models.crf_refined import with_crf

    ckpt = load_checkpoint(path, map_location=map_location)
    kwargs = dict(ckpt.get("model_kwargs") or {})
    model = with_crf(create_model(ckpt["model_name"], ckpt["num_classes"], **kwargs), ckpt.get("crf"))
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    model.eval()
    return model, ckpt
