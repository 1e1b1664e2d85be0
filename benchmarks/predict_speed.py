"""Prediction time of the whole pyseg-predict pipeline (decode, forward, softmax at full size, CRF, CSV).

Runs ``pyseg.inference.predict.predict_to_submission`` on a COCO json (default: the 150 images of
``shared/data/trashcan/test.json``) without the CRF, with the CRF overlapped with the forward pass
(worker thread) and with the CRF in line, each --repeats times; prints the median and min seconds.
Without --checkpoint a randomly initialised --model is used (timing only: its predictions are junk).
The machine may be shared: the repeats and the median are there to damp other load. Not a test.

    python benchmarks/predict_speed.py [--checkpoint CKPT | --model deeplabv3_resnet18]
        [--input-size 256] [--presets krahenbuhl] [--repeats 3] [--num-threads N] [--max-images N]
        [--overlap both|on|off|auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # for ../shared/data; pyseg is the installed package


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = REPO.parent / "shared" / "data" / "trashcan"
    ap.add_argument("--data-root", default=str(data))
    ap.add_argument("--ann", default=str(data / "test.json"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--model", default="deeplabv3_resnet18")
    ap.add_argument("--input-size", type=int, default=None, help="default: the checkpoint's eval size, else 256")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--presets", default="krahenbuhl")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--overlap", choices=["both", "on", "off", "auto"], default="both",
                    help="CRF runs: overlapped with the forward pass (on), in line (off), both, or auto "
                         "(what pyseg-predict picks for these threads)")
    args = ap.parse_args(argv)

    import torch

    from pyseg.inference import inputs as I
    from pyseg.inference import predict as P
    from pyseg.crf.params import CRFParams
    from pyseg.submission import image_ids_from_json

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.checkpoint:
        model, ckpt = I.load_trained_model(args.checkpoint)
        what = f"checkpoint {args.checkpoint} ({ckpt.get('model_name')})"
    else:
        from pyseg.data import CocoSegmentation
        from pyseg.models import create_model

        probe = CocoSegmentation(args.data_root, args.ann)
        torch.manual_seed(0)
        model = create_model(args.model, probe.num_classes).eval()
        ckpt = {"num_classes": probe.num_classes, "class_names": probe.class_names, "config": {}}
        what = f"randomly initialised {args.model} (timing only)"
    if args.input_size is None:
        args.input_size = I.input_size_from_checkpoint(ckpt, 256)
    ds = I.open_dataset(args.data_root, args.ann, ckpt)
    I.check_classes(ckpt, ds.num_classes, ds.class_names)
    ids = image_ids_from_json(args.ann)
    n = len(ids) if args.max_images is None else min(args.max_images, len(ids))
    ids = ids[:n]
    modes = [("no CRF", None, True)]
    for name in [s for s in args.presets.split(",") if s]:
        if args.overlap in ("both", "on"):
            modes.append((f"CRF {name}, overlapped", CRFParams.preset(name), True))
        if args.overlap in ("both", "off"):
            modes.append((f"CRF {name}, in line", CRFParams.preset(name), False))
        if args.overlap == "auto":
            auto = P.should_overlap("cpu", args.num_threads)
            modes.append((f"CRF {name}, {'overlapped' if auto else 'in line'} (auto)", CRFParams.preset(name), auto))
    print(f"{n} images of {args.ann}; {what}; input {args.input_size}; batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}; CRF threads {args.num_threads or 'default'}; "
          f"{os.cpu_count()} CPUs; {args.repeats} repeats (interleaved)", flush=True)
    times = {m[0]: [] for m in modes}
    with tempfile.TemporaryDirectory() as td:
        for rep in range(args.repeats):
            for label, crf, overlap in modes:
                t = time.perf_counter()
                P.predict_to_submission(model, ds, Path(td) / "sub.csv", image_ids=ids, size=args.size,
                                        input_size=args.input_size, crf=crf, crf_device="cpu",
                                        batch_size=args.batch_size, num_threads=args.num_threads, limit=n,
                                        overlap=overlap)
                times[label].append(time.perf_counter() - t)
                print(f"  run {rep + 1} {label:<28} {times[label][-1]:7.1f} s", flush=True)
    print(f"{'mode':<30}{'median s':>10}{'min s':>9}{'s/image':>9}")
    for label, ts in times.items():
        med = statistics.median(ts)
        print(f"{label:<30}{med:10.1f}{min(ts):9.1f}{med / n:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
