"""Backbone weights: torchvision's ImageNet weights by name, or a local state_dict file.

``pretrained_backbone`` (a model keyword) is either

- a weights name: ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, the weights torchvision's own
  segmentation models start from) or ``"imagenet1k_v2"`` (ResNet-50/101 only). They come through
  torchvision's weights API: the file is downloaded once (progress bar on a terminal, SHA-256 prefix
  checked) into torch's hub cache, ``$TORCH_HOME/hub/checkpoints/`` (``~/.cache/torch`` by default),
  and read from there afterwards;
- a path to a local file holding a state_dict in torchvision's key layout.

:func:`load_state` returns the state_dict, :func:`fill_backbone` copies it into a backbone with checks
that name every missing, unexpected or mis-shaped key, and :func:`vgg_fc_to_conv` turns VGG16's fully
connected fc6/fc7 into the convolutions DeconvNet and DeepLab v1/v2 use.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

# Weights names accepted by pretrained_backbone -> torchvision's enum member.
WEIGHTS_NAMES = {"imagenet": "IMAGENET1K_V1", "imagenet1k_v1": "IMAGENET1K_V1", "imagenet1k_v2": "IMAGENET1K_V2"}
# Architectures pyseg's backbones come from -> torchvision's weights enum.
ARCH_WEIGHTS = {"vgg16": "VGG16_Weights", "vgg16_bn": "VGG16_BN_Weights", "resnet18": "ResNet18_Weights",
                "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}
# Keys of a classification checkpoint that a backbone does not hold (fc6/fc7 are converted separately).
HEAD_PREFIXES = ("fc.", "classifier.", "avgpool.")


class PretrainedWeightsError(FileNotFoundError):
    """The named weights could not be had (no network, a firewall, or a corrupt cached file)."""


@dataclass(frozen=True)
class LoadedState:
    """A state_dict and where it came from (for messages)."""

    state: dict[str, torch.Tensor]
    source: str


def is_weights_name(spec) -> bool:
    return isinstance(spec, str) and spec.strip().lower() in WEIGHTS_NAMES


def weights_enum(arch: str, spec: str):
    """torchvision's weights enum member for ``arch`` and the name ``spec`` (ValueError lists the choices)."""
    if arch not in ARCH_WEIGHTS:
        raise ValueError(f"no ImageNet weights for backbone {arch!r}; known: {', '.join(ARCH_WEIGHTS)}")
    enum = getattr(torchvision.models, ARCH_WEIGHTS[arch])
    member = WEIGHTS_NAMES[spec.strip().lower()]
    if member not in enum.__members__:
        have = [n for n, m in WEIGHTS_NAMES.items() if m in enum.__members__]
        raise ValueError(f"pretrained_backbone={spec!r}: torchvision has no {member} weights for {arch}; "
                         f"choose one of {', '.join(have)} or a local file")
    return enum[member]


def cache_path(weights) -> str:
    """Where torchvision keeps (or will download) the file of ``weights``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def _read_file(path: str, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zips, pickles and garbage raise many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"could not read {what} {path} ({type(e).__name__}: {first})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} {path} does not hold a state_dict (a dict of tensors)")
    return state


def _download(weights, arch: str) -> dict:
    path = cache_path(weights)
    name = f"torchvision {type(weights).__name__}.{weights.name} ({arch})"
    if not os.path.isfile(path):
        log.info("downloading %s from %s to %s", name, weights.url, path)
        try:
            # check_hash: the file name carries the first digits of its SHA-256, checked after the download
            weights.get_state_dict(progress=sys.stderr.isatty(), check_hash=True, weights_only=True)
        except Exception as e:  # noqa: BLE001 - URLError, HTTPError, timeouts, hash mismatch, ...
            raise PretrainedWeightsError(
                f"could not download the ImageNet weights {name} from {weights.url} "
                f"({type(e).__name__}: {e}). Offline or behind a firewall: fetch that file elsewhere and put it "
                f"at {path} (the folder follows $TORCH_HOME), or set pretrained_backbone to a local file"
            ) from None
    try:
        return _read_file(path, f"cached weight file of {name}")
    except ValueError as e:
        raise PretrainedWeightsError(f"{e}; the file is damaged: delete it so that it is downloaded again, "
                                     f"or replace it with a good copy of {os.path.basename(path)}") from None


def load_state(spec, arch: str) -> LoadedState:
    """The state_dict named by ``spec`` (a weights name or a local file) for backbone ``arch``.

    ``module.`` and ``backbone.`` key prefixes are stripped. Raises FileNotFoundError for a missing local
    file, :class:`PretrainedWeightsError` when named weights cannot be downloaded or their cached file is
    corrupt, and ValueError for a file that is no state_dict.
    """
    if is_weights_name(spec):
        weights = weights_enum(arch, spec)
        state, source = _download(weights, arch), cache_path(weights)
    else:
        path = os.fspath(spec)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"pretrained_backbone file not found: {path} (give a local state_dict file or "
                                    f"one of the weights names {', '.join(WEIGHTS_NAMES)})")
        state, source = _read_file(path, "pretrained_backbone file"), path
    cleaned = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        cleaned[k] = v
    return LoadedState(cleaned, source)


def fill_backbone(backbone: nn.Module, loaded: LoadedState) -> None:
    """Copy ``loaded`` into ``backbone``; ValueError names missing, unexpected and mis-shaped keys.

    Keys of a classification head (``fc.``, ``classifier.``, ``avgpool.``) are left for the caller.
    """
    own = backbone.state_dict()
    state = loaded.state
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not k.startswith(HEAD_PREFIXES)]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {_few(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {_few(shapes)})")
        raise ValueError(f"pretrained_backbone {loaded.source} does not fit {type(backbone).__name__}: "
                         + "; ".join(parts) + ". Expected a torchvision-layout state_dict of the same architecture.")
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    log.info("loaded backbone weights from %s (%d tensors)", loaded.source, len(own))


def load_backbone_weights(backbone: nn.Module, spec, arch: str) -> LoadedState:
    """:func:`load_state` then :func:`fill_backbone`; returns the state (its fc6/fc7 may be used next)."""
    loaded = load_state(spec, arch)
    fill_backbone(backbone, loaded)
    return loaded


def vgg_fc_to_conv(loaded: LoadedState, fc6: nn.Conv2d, fc7: nn.Conv2d) -> bool:
    """Initialise the convolutions ``fc6``/``fc7`` from VGG16's ``classifier.0``/``classifier.3``.

    VGG16's fc6 is a linear layer over the (512, 7, 7) pool5 map, so its (4096, 25088) matrix is a
    (4096, 512, 7, 7) convolution; fc7's (4096, 4096) matrix is a 1x1 convolution. Where the target is
    smaller the weights are decimated, as DeepLab-LargeFOV did: a 3x3 fc6 keeps the taps at rows and
    columns 0, 3, 6 of the 7x7 kernel (spread out again by the layer's own dilation), and 1024 channels keep
    every 4th filter of fc6 and every 4th row and column of fc7. Returns False (with a warning) when the
    state has no fc6/fc7 or the shapes cannot be derived this way (e.g. a light ``fc_channels``).
    """
    state = loaded.state
    if "classifier.0.weight" not in state or "classifier.3.weight" not in state:
        log.info("%s holds no fc6/fc7 (classifier.0 / classifier.3): fc6 and fc7 keep their random init",
                 loaded.source)
        return False
    w6, b6 = state["classifier.0.weight"], state["classifier.0.bias"]
    w7, b7 = state["classifier.3.weight"], state["classifier.3.bias"]
    out6, in6, k6 = fc6.out_channels, fc6.in_channels, fc6.kernel_size[0]
    ok = (tuple(w6.shape) == (4096, 512 * 49) and tuple(w7.shape) == (4096, 4096) and in6 == 512
          and 4096 % out6 == 0 and k6 in (7, 3) and fc6.kernel_size[0] == fc6.kernel_size[1]
          and fc7.in_channels == out6 and fc7.out_channels == out6 and fc7.kernel_size == (1, 1))
    if not ok:
        log.warning("fc6/fc7 of %s not loaded: they need fc6 of 512 -> a divisor of 4096 channels with a 7x7 "
                    "or 3x3 kernel (got %d -> %d, %s) and a matching 1x1 fc7; they keep their random init",
                    loaded.source, in6, out6, fc6.kernel_size)
        return False
    ch = slice(None, None, 4096 // out6)
    taps = slice(None) if k6 == 7 else slice(None, None, 3)
    with torch.no_grad():
        fc6.weight.copy_(w6.view(4096, 512, 7, 7)[ch][:, :, taps, taps])
        fc6.bias.copy_(b6[ch])
        fc7.weight.copy_(w7[ch][:, ch].reshape(out6, out6, 1, 1))
        fc7.bias.copy_(b7[ch])
    log.info("fc6/fc7 from %s: %dx%d fc6 with %d channels%s", loaded.source, k6, k6, out6,
             "" if out6 == 4096 and k6 == 7 else " (decimated)")
    return True


def _few(items: Iterable[str], n: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")
