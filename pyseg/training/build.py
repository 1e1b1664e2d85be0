"""Build what a run needs from a Config: device, datasets, model, optimizer (loaders: :mod:`.loaders`).

Small functions, each readable on its own; :func:`pyseg.training.engine.fit` calls them in order.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from pyseg.config import Config, DataConfig, OptimConfig

log = logging.getLogger(__name__)


def resolve_device(name: str, local_rank: int = 0, what: str = "train.device") -> torch.device:
    """``auto`` -> cuda:<local_rank> when CUDA is available, else cpu; ``cuda`` -> cuda:<local_rank>.

    ``what`` names the setting in errors (a config key, or a command's flag)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what} must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} is {name!r} but CUDA is not available; use 'cpu' or 'auto'")
        return dev if dev.index is not None else torch.device(f"cuda:{local_rank}")
    return dev


def seed_everything(seed: int, deterministic: bool = False, device: torch.device | None = None) -> None:
    """Seed python, numpy and torch; with ``deterministic`` also force deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        cuda = device is not None and device.type == "cuda"
        # Some CUDA backward kernels (bilinear upsampling) have no deterministic version: warn, do not fail.
        torch.use_deterministic_algorithms(True, warn_only=cuda)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device is not None and device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _ann_path(root: str, ann: str) -> str:
    p = Path(ann)
    return str(p if p.is_absolute() else Path(root) / p)


def build_datasets(data: DataConfig):
    """(train_set, val_set) with the train/eval transforms: ``pyseg.data.CocoSegmentation`` for
    ``data.format == "coco"``, ``pyseg.data.MaskFolderSegmentation`` for ``"mask_folder"``."""
    from pyseg.data.transforms import eval_transform, train_transform

    demo = "to try pyseg without data, make the synthetic demo data with 'pyseg-demo-data demo_data' and set " \
           "data.root=demo_data"
    if not data.root:
        raise ValueError("config: data.root is not set; point it at the folder with the images and the json "
                         f"files, e.g. --set data.root=/path/to/data ({demo})")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a folder ({demo.replace('demo_data', str(root))})")
    eval_size = data.eval_size or data.image_size
    train_tf = train_transform(data.image_size, **data.train_transform)
    eval_tf = eval_transform(eval_size, **data.eval_transform)
    if data.format == "mask_folder":
        from pyseg.data import MaskFolderSegmentation

        if data.classes is None:
            raise ValueError("config: data.classes must be set for data.format=mask_folder (a preset such as "
                             "'camvid11' or a list of names): label PNGs carry no class names")
        common = dict(classes=data.classes, ignore_index=data.ignore_index)
        train_set = MaskFolderSegmentation(root / data.train_images, root / data.train_masks, transform=train_tf,
                                           **common)
        val_set = MaskFolderSegmentation(root / data.val_images, root / data.val_masks, transform=eval_tf, **common)
    else:
        from pyseg.data import CocoSegmentation

        common = dict(classes=data.classes, overlap=data.overlap)
        train_set = CocoSegmentation(str(root), _ann_path(str(root), data.train_ann), transform=train_tf, **common)
        val_set = CocoSegmentation(str(root), _ann_path(str(root), data.val_ann), transform=eval_tf, **common)
    if train_set.num_classes != val_set.num_classes:
        raise ValueError(f"train and val sets disagree on the number of classes: "
                         f"{train_set.num_classes} vs {val_set.num_classes}")
    return train_set, val_set


def checkpoint_model_kwargs(kwargs: dict) -> dict:
    """Model kwargs as stored in checkpoints: no ``pretrained_backbone`` (the weights are in the state)."""
    return {k: v for k, v in kwargs.items() if k != "pretrained_backbone"}


def crf_spec(cfg: Config) -> dict | None:
    """The CRF layer's spec as checkpoints store it (presets resolved to numbers), or None without one."""
    if cfg.model.crf is None:
        return None
    from pyseg.models.crf_refined import parse_crf_spec

    return parse_crf_spec(cfg.model.crf)


def build_model(cfg: Config, num_classes: int) -> torch.nn.Module:
    """``create_model`` of the config, followed by the CRF layer when ``model.crf`` is set."""
    from pyseg.models import create_model

    from pyseg.models.crf_refined import with_crf

    model = create_model(cfg.model.name, num_classes, **cfg.model.kwargs)
    if cfg.model.init_checkpoint:
        init_from_checkpoint(model, cfg.model.init_checkpoint)
    return with_crf(model, cfg.model.crf)


def init_from_checkpoint(model: torch.nn.Module, path) -> None:
    """Load a pyseg checkpoint's network weights into ``model`` (a CRF layer's values in it are left out)."""
    from pyseg.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    if ckpt.get("crf"):
        state = {k.removeprefix("net."): v for k, v in state.items() if not k.startswith("crf.")}
    what = f"model.init_checkpoint {path} ({ckpt.get('model_name')}, {ckpt.get('num_classes')} classes)"
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise ValueError(f"{what} does not fit this model: {first}") from None
    if missing or unexpected:
        raise ValueError(f"{what} does not fit this model: missing {list(missing)[:3]}, unexpected "
                         f"{list(unexpected)[:3]} ({len(missing)} and {len(unexpected)} keys)")
    log.info("model weights from %s (epoch %s)", path, ckpt.get("epoch"))


def split_backbone_head(model: torch.nn.Module):
    """(backbone params, head params): the model's own ``param_groups()`` when it has one, else by name."""
    from pyseg.training.checkpoint import unwrap_model

    inner = unwrap_model(model)
    if callable(getattr(inner, "param_groups", None)):
        backbone, head = inner.param_groups()
        return list(backbone), list(head)
    backbone, head = [], []
    for name, p in inner.named_parameters():
        (backbone if name.startswith(("backbone.", "encoder.")) else head).append(p)
    return backbone, head


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD with two parameter groups (backbone at ``backbone_lr``, head at ``lr``).

    Group 0 is the backbone (when it has parameters), then the CRF layer's (``crf_lr``, with ``model.crf``),
    the last group the head; frozen parameters (requires_grad False) are left out.
    """
    backbone, head = split_backbone_head(model)
    backbone = [p for p in backbone if p.requires_grad]
    head = [p for p in head if p.requires_grad]
    groups = []
    from pyseg.training.checkpoint import unwrap_model

    crf = [p for p in getattr(unwrap_model(model), "crf_parameters", list)() if p.requires_grad]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr if cfg.backbone_lr is None else cfg.backbone_lr,
                       "name": "backbone"})
    if crf:
        groups.append({"params": crf, "lr": cfg.lr if cfg.crf_lr is None else cfg.crf_lr, "name": "crf"})
    if head:
        groups.append({"params": head, "lr": cfg.lr, "name": "head"})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; expected adam, adamw or sgd")
