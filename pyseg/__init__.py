"""pyseg: semantic segmentation with the fastest dense CRF.

In the order the data flows:
    pyseg.data        COCO and mask-folder datasets, transforms, RAM cache, demo data
    pyseg.models      DeconvNet and DeepLab v1/v2/v3/v3+ by name, ImageNet backbones
    pyseg.training    trainer, loaders, schedules, metrics, checkpoints, run files and plots
    pyseg.inference   prediction with TTA and the dense CRF, evaluation, CRF tuning, saved probabilities
    pyseg.submission  the competition CSV
    pyseg.crf         fully-connected CRF (permutohedral lattice), CPU and CUDA; needs only numpy
    pyseg.cli         the commands (pyseg-train, -predict, -evaluate, -tune-crf, -compare, -demo-data)
"""

__version__ = "0.1.0"
