"""One typed training configuration (nested dataclasses) with YAML in and out.

Layout (every field has a default, so a YAML file only lists what it changes)::

    name: demo                  # run name; default output dir is runs/<name>/v<N>
    data:      root, train_ann, val_ann, classes, overlap, image_size, eval_size, batch_size, ...
    model:     name, kwargs, sync_bn, crf (the CRF layer, learned end to end), init_checkpoint
    optim:     name (adam|adamw|sgd), lr, backbone_lr, crf_lr, weight_decay, momentum, betas, nesterov
    schedule:  name (constant|exponential|step|poly|cosine), warmup_steps, warmup_start_factor, ...
    train:     epochs, seed, device, amp, channels_last, grad_clip, accum_steps, deterministic, ...
    early_stopping: monitor (val_loss|val_miou), patience, min_delta

``load_config(path, overrides)`` reads YAML, applies ``key.sub=value`` overrides and checks every
value against the annotated type; unknown keys raise a ``KeyError``-like ``ValueError`` that lists the
valid keys and suggests the closest. ``save_config(cfg, path)`` writes the resolved config atomically.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pyseg.fileio import atomic_write_text



@dataclass
class DataConfig:
    root: str | None = None  # data folder holding the images and the COCO json files (or the label folders)
    format: Literal["coco", "mask_folder"] = "coco"  # COCO json, or image + label-PNG folders (CamVid)
    train_ann: str = "train.json"  # coco: relative to root (or absolute)
    val_ann: str = "val.json"
    train_images: str = "train"  # mask_folder: image / label folders relative to root (CamVid layout)
    train_masks: str = "trainannot"
    val_images: str = "val"
    val_masks: str = "valannot"
    classes: list[str] | str | None = None  # passed to the dataset; None: from the json categories
    overlap: str = "area_desc"  # how overlapping annotations are painted (see pyseg.data)
    image_size: int = 512  # training crop/resize side
    eval_size: int | None = None  # validation resize side; None: image_size
    batch_size: int = 16
    val_batch_size: int | None = None  # None: batch_size
    num_workers: int = 2  # DataLoader worker processes (kept alive across epochs)
    cache: Literal["none", "ram"] = "none"  # ram: decode every image and mask once, before training starts
    ignore_index: int = 255
    train_transform: dict[str, Any] = field(default_factory=dict)  # kwargs of train_transform()
    eval_transform: dict[str, Any] = field(default_factory=dict)  # kwargs of eval_transform()


@dataclass
class ModelConfig:
    name: str = "deconvnet_vgg16"  # see pyseg.models.list_models()
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra kwargs of create_model()
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under DDP
    # the dense-CRF layer after the model, learned end to end: {iterations: 5, params: deeplab (a preset, a
    # mapping of CRFParams or pyseg-tune-crf's .json), learn: [compat, weights]} (pyseg.models.crf_refined);
    # null = none
    crf: dict[str, Any] | None = None
    init_checkpoint: str | None = None  # start from this pyseg checkpoint's weights (fine-tuning); its CRF not


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 3e-4  # peak LR of the head (and of the backbone unless backbone_lr is set)
    backbone_lr: float | None = None  # separate LR for the backbone parameters
    crf_lr: float | None = None  # LR of the CRF layer's parameters (model.crf); null = lr
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam / adamw


@dataclass
class ScheduleConfig:
    """LR schedule stepped once per optimizer step (iteration).

    warmup: the LR rises linearly from ``warmup_start_factor * peak`` (0 by default) to the peak over
    ``warmup_steps`` steps (step s < N: factor f0 + (1 - f0) * s / N); at step N the decay starts from
    the peak. Decays, with k = steps since the end of the warm-up and K = total steps - warmup_steps:
    constant (1), exponential (gamma**k), step (gamma**(k // step_size)),
    poly ((1 - min(k, K) / K) ** power), cosine (min_lr + (peak - min_lr) * (1 + cos(pi * k / K)) / 2).
    """

    name: Literal["constant", "exponential", "step", "poly", "cosine"] = "constant"
    warmup_steps: int = 0
    warmup_start_factor: float = 0.0
    gamma: float = 0.996  # exponential: factor per step; step: factor every step_size steps
    step_size: int = 1000  # step decay period in iterations
    power: float = 0.9  # poly
    min_lr: float = 0.0  # cosine floor (absolute, same for all parameter groups)


@dataclass
class TrainConfig:
    epochs: int = 20
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast dtype (fp16 with a GradScaler; slow on a CPU)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model on CUDA (on a CPU: a logged fallback to eager mode)
    grad_clip: float | None = None  # max global grad norm
    accum_steps: int = 1  # gradient accumulation: optimizer step every N batches
    deterministic: bool = False  # torch.use_deterministic_algorithms(True) + seeded everything
    log_every: int = 20  # log a line every N batches (when no progress bar)
    output_dir: str | None = None  # None: runs/<name>/v<N> (next free version)
    max_train_batches: int | None = None  # cap batches per epoch (smoke tests, benchmarks)
    max_val_batches: int | None = None
    dist_backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    tensorboard: bool = True  # write TensorBoard logs when the tensorboard package is installed
    plots: bool = True  # write plots/*.png after each epoch


@dataclass
class EarlyStoppingConfig:
    monitor: Literal["val_loss", "val_miou"] = "val_loss"
    patience: int = 0  # epochs without improvement before stopping; 0 disables early stopping
    min_delta: float = 0.0  # smallest change that counts as an improvement


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Check value ranges; raises ValueError naming the key, the expectation and the value."""
        checks = [
            ("data.image_size", self.data.image_size >= 8, "an int >= 8"),
            ("data.eval_size", self.data.eval_size is None or self.data.eval_size >= 8, "null or an int >= 8"),
            ("data.batch_size", self.data.batch_size >= 1, "an int >= 1"),
            ("data.val_batch_size", self.data.val_batch_size is None or self.data.val_batch_size >= 1,
             "null or an int >= 1"),
            ("data.num_workers", self.data.num_workers >= 0, "an int >= 0"),
            ("optim.lr", self.optim.lr > 0, "a float > 0"),
            ("optim.backbone_lr", self.optim.backbone_lr is None or self.optim.backbone_lr >= 0,
             "null or a float >= 0"),
            ("optim.crf_lr", self.optim.crf_lr is None or self.optim.crf_lr >= 0, "null or a float >= 0"),
            ("optim.weight_decay", self.optim.weight_decay >= 0, "a float >= 0"),
            ("optim.momentum", 0 <= self.optim.momentum < 1, "a float in [0, 1)"),
            ("optim.betas", len(self.optim.betas) == 2 and all(0 <= b < 1 for b in self.optim.betas),
             "two floats in [0, 1)"),
            ("schedule.warmup_steps", self.schedule.warmup_steps >= 0, "an int >= 0"),
            ("schedule.warmup_start_factor", 0 <= self.schedule.warmup_start_factor <= 1, "a float in [0, 1]"),
            ("schedule.gamma", 0 < self.schedule.gamma <= 1, "a float in (0, 1]"),
            ("schedule.step_size", self.schedule.step_size >= 1, "an int >= 1"),
            ("schedule.power", self.schedule.power > 0, "a float > 0"),
            ("schedule.min_lr", 0 <= self.schedule.min_lr < self.optim.lr, "a float in [0, optim.lr)"),
            ("train.epochs", self.train.epochs >= 1, "an int >= 1"),
            ("train.grad_clip", self.train.grad_clip is None or self.train.grad_clip > 0, "null or a float > 0"),
            ("train.accum_steps", self.train.accum_steps >= 1, "an int >= 1"),
            ("train.log_every", self.train.log_every >= 1, "an int >= 1"),
            ("train.max_train_batches", self.train.max_train_batches is None or self.train.max_train_batches >= 1,
             "null or an int >= 1"),
            ("train.max_val_batches", self.train.max_val_batches is None or self.train.max_val_batches >= 1,
             "null or an int >= 1"),
            ("train.dist_backend", self.train.dist_backend in ("auto", "gloo", "nccl"), "auto, gloo or nccl"),
            ("early_stopping.patience", self.early_stopping.patience >= 0, "an int >= 0"),
            ("early_stopping.min_delta", self.early_stopping.min_delta >= 0, "a float >= 0"),
        ]
        dev = self.train.device
        checks.append(("train.device", dev in ("auto", "cpu", "cuda") or
                       (dev.startswith("cuda:") and dev[5:].isdigit()), "auto, cpu, cuda or cuda:N"))
        for key, ok, expected in checks:
            if not ok:
                raise ValueError(f"config: {key} must be {expected}, got {_get(self, key)!r}")
        if self.model.crf is not None:
            from pyseg.models.crf_refined import parse_crf_spec

            try:  # the parsed form: a run's config.yaml then holds the values, not a .json path that may go
                self.model.crf = parse_crf_spec(self.model.crf)
            except ValueError as e:
                raise ValueError(f"config: {e}") from None
        return self


# ----------------------------------------------------------------------------------------- typing


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str):
    """Return ``value`` converted to annotation ``tp`` or raise TypeError/ValueError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"config: {key} must be a mapping of {list(_field_types(tp))}, got {value!r}")
        return _from_dict(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"config: {key} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            hint = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"config: {key} must be one of {list(args)}, got {value!r}{extra}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"config: {key} must be a list, got {value!r}")
        (item_tp,) = args or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"config: {key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"config: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"config: {key} must be an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise TypeError(f"config: {key} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f"config: {key} must be a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"config: {key} must be a string, got {value!r}")
        return value
    raise TypeError(f"config: unsupported annotation {tp!r} for {key}")


def _field_types(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, valid) -> ValueError:
    valid = list(valid)
    prefix, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else ""
    return ValueError(f"config: unknown key {key!r}{hint} Valid keys here: {', '.join(valid)}")


def _from_dict(cls, data: dict, prefix: str = ""):
    types_ = _field_types(cls)
    kwargs = {}
    for k, v in data.items():
        if k not in types_:
            raise _unknown_key(prefix + str(k), types_)
        kwargs[k] = _coerce(v, types_[k], prefix + k)
    return cls(**kwargs)


def _get(cfg, key: str):
    obj = cfg
    for part in key.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


# ----------------------------------------------------------------------------------------- public API


def config_from_dict(data: dict | None) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TypeError(f"config: the top level must be a mapping, got {type(data).__name__}")
    return _from_dict(Config, data).validate()


def apply_overrides(cfg: Config, overrides) -> Config:
    """Apply ``["optim.lr=1e-3", "model.kwargs.pretrained=false", ...]``; returns a new validated Config.

    Values are parsed as YAML (``[1, 2]``, ``null``, ``true``); a string field keeps the raw text.
    Keys inside a dict-valued field (``model.kwargs.x``) may be new; every other key must exist.
    """
    data = cfg.to_dict()
    for item in overrides or []:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"config override must look like key.sub=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ValueError(f"config override has an empty key part: {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        cls, node = Config, data
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            if cls is None:  # inside a free-form dict
                if i == len(parts) - 1:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
                continue
            types_ = _field_types(cls)
            if part not in types_:
                raise _unknown_key(path, types_)
            tp = types_[part]
            if i == len(parts) - 1:
                if _accepts_str(tp) and not isinstance(value, str):
                    try:
                        _coerce(value, tp, path)
                    except (TypeError, ValueError):
                        value = raw
                node[part] = _coerce(value, tp, path) if not dataclasses.is_dataclass(tp) else value
            elif dataclasses.is_dataclass(tp):
                cls, node = tp, node[part]
            elif typing.get_origin(tp) is dict:
                cls, node = None, node[part]
            else:
                raise ValueError(f"config: {path} is a {_type_name(tp)}, it has no sub-key {parts[i + 1]!r}")
    return config_from_dict(data)


def _accepts_str(tp) -> bool:
    if tp is str:
        return True
    return typing.get_origin(tp) in (Union, types.UnionType) and str in typing.get_args(tp)


def load_config(path: str | os.PathLike | None = None, overrides=None) -> Config:
    """Read a YAML config (or defaults when ``path`` is None) and apply ``overrides``."""
    data = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path) as f:
            try:
                data = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise ValueError(f"config file {path} is not valid YAML: {e}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TypeError(f"config file {path}: the top level must be a mapping, got {type(data).__name__}")
        data.setdefault("name", path.stem)
    cfg = config_from_dict(data)
    return apply_overrides(cfg, overrides) if overrides else cfg


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file in the same folder + os.replace)."""
    atomic_write_text(path, config_to_yaml(cfg))
