"""``data.cache: ram``: decode every image (and rasterise every mask) once, before the loader's workers start.

The decoded arrays are made read-only and kept in a list on the dataset; forked workers share those pages
with the parent, so JPEG decoding and mask rasterisation leave the training loop after the first pass.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)


def _frozen(a):
    if a is not None:
        a.flags.writeable = False
    return a


def fill_ram_cache(dataset, num_threads: int | None = None) -> int:
    """Decode all items of ``dataset`` (a pyseg dataset with ``load_item``) into ``dataset.ram``; returns bytes.

    Decoding runs in threads (PIL and pycocotools release the GIL for most of the work).
    """
    if not callable(getattr(dataset, "load_item", None)):
        raise TypeError(f"data.cache=ram needs a pyseg dataset (CocoSegmentation or MaskFolderSegmentation), "
                        f"got {type(dataset).__name__}")
    t0 = time.perf_counter()
    threads = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads, thread_name_prefix="pyseg-cache") as pool:
        items = list(pool.map(lambda i: tuple(_frozen(a) for a in dataset.load_item(i)), range(len(dataset))))
    dataset.ram = items
    size = sum(a.nbytes for item in items for a in item if isinstance(a, np.ndarray))
    log.info("data.cache=ram: %d items of %s in memory, %.0f MiB, decoded in %.1f s", len(items),
             type(dataset).__name__, size / 2**20, time.perf_counter() - t0)
    return size
