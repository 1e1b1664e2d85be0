"""Dense CRF (fully connected CRF with Gaussian edge potentials, permutohedral lattice) for pyseg.

Two ways in:

- ``dense_crf(probs, image, params=None, ...)``: numpy arrays or torch tensors, one image or a batch, CPU
  threads or CUDA.
- A drop-in for pydensecrf: ``import pyseg.crf as dcrf`` (``DenseCRF2D``, ``DenseCRF``, the constants) and
  ``from pyseg.crf.utils import unary_from_softmax, ...``.

Importing needs numpy only; torch is used only when tensors are passed.
"""

from pyseg.crf.api import dense_crf, get_num_threads, release_memory, set_lattice_cache, set_num_threads
from pyseg.crf.backends import backends
from pyseg.crf.densecrf import (
    CONST_KERNEL,
    DIAG_KERNEL,
    FULL_KERNEL,
    NO_NORMALIZATION,
    NORMALIZE_AFTER,
    NORMALIZE_BEFORE,
    NORMALIZE_SYMMETRIC,
    DenseCRF,
    DenseCRF2D,
)
from pyseg.crf.params import CRFParams

__all__ = [
    "CONST_KERNEL",
    "DIAG_KERNEL",
    "FULL_KERNEL",
    "NO_NORMALIZATION",
    "NORMALIZE_AFTER",
    "NORMALIZE_BEFORE",
    "NORMALIZE_SYMMETRIC",
    "CRFParams",
    "DenseCRF",
    "DenseCRF2D",
    "backends",
    "dense_crf",
    "get_num_threads",
    "release_memory",
    "set_lattice_cache",
    "set_num_threads",
]
