"""From a trained checkpoint to class maps: load and check the inputs (``inputs``), predict with TTA and the
dense CRF (``predict``), score labelled data (``evaluation``), search CRF parameters (``crf_tuning``), save and
average class probabilities (``probs``), draw overlays (``overlays``). Submissions are written by
:mod:`pyseg.submission`."""
