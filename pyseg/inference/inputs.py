"""What pyseg-predict / pyseg-evaluate / pyseg-tune-crf check and load before any work: the checkpoint,
its classes against the data's, the input size it was trained at, the json and the images on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pyseg.fileio import read_json


def load_trained_model(path, device="cpu"):
    """(model in eval mode on ``device``, checkpoint dict) via ``pyseg.training.checkpoint.load_model``.

    Any failure (missing file, not a checkpoint, weights of another architecture or class count) is
    raised as a ValueError that names the checkpoint.
    """
    from pyseg.training.checkpoint import load_model

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        model, ckpt = load_model(str(path), map_location="cpu")
    except (ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {path}: {e}") from None
    except (RuntimeError, KeyError, EOFError, OSError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint {path} could not be loaded ({type(e).__name__}: {first})") from None
    except Exception as e:  # unpickling garbage raises all sorts of things
        raise ValueError(f"checkpoint {path} is not a pyseg checkpoint ({type(e).__name__}: {e})") from None
    return model.to(device).eval(), ckpt


def check_classes(ckpt: dict, num_classes: int, class_names: Sequence[str] | None, ann: str = "the data") -> None:
    """Raise ValueError when the checkpoint's classes differ from the dataset's."""
    n = ckpt.get("num_classes")
    if n is not None and int(n) != int(num_classes):
        raise ValueError(f"the checkpoint predicts {n} classes but {ann} has {num_classes} "
                         f"({', '.join(map(str, class_names or []))[:200]}); use a checkpoint trained on these classes")
    names = ckpt.get("class_names")
    if names and class_names and list(names) != list(class_names):
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(names, class_names)) if a != b][:3]
        raise ValueError(f"the checkpoint's class names differ from those of {ann} ({'; '.join(diff)})")


def input_size_from_checkpoint(ckpt: dict, default: int | None = 512) -> int | None:
    """The side the model was evaluated at in training: config data.eval_size, else data.image_size."""
    data = (ckpt.get("config") or {}).get("data") or {}
    return data.get("eval_size") or data.get("image_size") or default


def resolve_ann(root, ann_file) -> Path:
    """``ann_file`` as given, or ``root/ann_file`` when only that exists (as pyseg.data does)."""
    p = Path(ann_file)
    if not p.is_file() and (Path(root) / p).is_file():
        return Path(root) / p
    return p


def check_images_exist(root, ann_file) -> list[dict]:
    """The json's ``images`` entries, after checking the json has images and that every file exists."""
    ann_file = resolve_ann(root, ann_file)
    data = read_json(ann_file, "annotation file")
    images = data.get("images") if isinstance(data, dict) else None
    if not images:
        raise ValueError(f"annotation file {ann_file} has no images")
    root = Path(root)
    missing = [im.get("file_name") for im in images if not (root / str(im.get("file_name"))).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} of {len(images)} images of {ann_file} are missing under {root}, "
                         f"e.g. {missing[0]}")
    return images


def open_dataset(root, ann_file, ckpt: dict | None = None):
    """A ``pyseg.data.CocoSegmentation`` without a transform (raw RGB images), with the class list and
    overlap rule of the checkpoint's training config; checks the json and the image files first."""
    from pyseg.data import CocoSegmentation

    ann_file = resolve_ann(root, ann_file)
    check_images_exist(root, ann_file)
    data_cfg = ((ckpt or {}).get("config") or {}).get("data") or {}
    kwargs = {}
    if data_cfg.get("classes") is not None:
        kwargs["classes"] = data_cfg["classes"]
    if data_cfg.get("overlap"):
        kwargs["overlap"] = data_cfg["overlap"]
    try:
        return CocoSegmentation(str(root), str(ann_file), **kwargs)
    except (KeyError, TypeError, FileNotFoundError) as e:
        raise ValueError(f"{ann_file} could not be read as a COCO segmentation json: {e}") from None


def _under(root, folder) -> Path:
    p = Path(folder)
    return p if p.is_absolute() or root is None else Path(root) / p


def open_mask_folder(root, images, masks=None, ckpt: dict | None = None):
    """A ``pyseg.data.MaskFolderSegmentation`` (CamVid layout) without a transform: ``images`` and ``masks``
    (label PNGs; None for unlabelled images) relative to ``root`` unless absolute. The classes, their void
    labels and ``ignore_index`` come from the checkpoint's training config (data.classes, else its class
    names), as pyseg-train read the labels."""
    from pyseg.data import MaskFolderSegmentation

    ckpt = ckpt or {}
    data_cfg = (ckpt.get("config") or {}).get("data") or {}
    classes = data_cfg.get("classes") or ckpt.get("class_names")
    if not classes:
        raise ValueError("mask-folder data carries no class names and the checkpoint names none (its config has "
                         "no data.classes); use a checkpoint written by pyseg-train")
    image_dir, mask_dir = _under(root, images), (_under(root, masks) if masks is not None else None)
    for what, d in (("images", image_dir), ("masks", mask_dir)):
        if d is not None and not d.is_dir():
            raise ValueError(f"{what} folder {d} does not exist")
    try:
        return MaskFolderSegmentation(image_dir, mask_dir, classes=classes,
                                      ignore_index=int(data_cfg.get("ignore_index", 255)))
    except (TypeError, FileNotFoundError) as e:
        raise ValueError(f"mask-folder data {image_dir}: {e}") from None
