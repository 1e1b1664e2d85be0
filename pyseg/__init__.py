"""pyseg: semantic segmentation with the fastest dense CRF.

Subpackages:
    pyseg.crf       fully-connected CRF (permutohedral lattice), CPU and CUDA; needs only numpy
    pyseg.data      COCO and mask-folder datasets, transforms, demo data
    pyseg.models    DeconvNet and DeepLab v1/v2/v3/v3+ by name
    pyseg.training  trainer, schedules, metrics, checkpoints
"""

__version__ = "0.1.0"
