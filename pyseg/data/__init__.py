"""Datasets, transforms, class presets and the synthetic demo data.

- :class:`CocoSegmentation`: competition-style COCO json + image root -> image / semantic mask items.
- :class:`MaskFolderSegmentation`: image folder + label-PNG folder (CamVid).
- :func:`train_transform`, :func:`eval_transform`: albumentations presets; :func:`worker_init_fn` and
  :func:`seed_transform` for reproducible, per-worker-distinct augmentation.
- :func:`make_demo_dataset`: small synthetic COCO dataset like the competition's.
"""

from .classes import CAMVID11, PRESETS, TRASH11, TRASH12, colorize, default_palette, palette_for, preset_names
from .coco import CocoSegmentation
from .demo import make_demo_dataset
from .mask_folder import MaskFolderSegmentation
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transform, seed_transform, train_transform,
                         worker_init_fn)

__all__ = ["CocoSegmentation", "MaskFolderSegmentation", "make_demo_dataset", "train_transform", "eval_transform",
           "worker_init_fn", "seed_transform", "denormalize", "IMAGENET_MEAN", "IMAGENET_STD", "TRASH11",
           "TRASH12", "CAMVID11", "PRESETS", "preset_names", "palette_for", "default_palette", "colorize"]
