"""The command line of a published bundle's ``predict.py`` (and ``python -m pipeline.bundle_cli``):
``predict.py [predict] [--model M] IMAGE...`` prints each image's labels, objects or mask,
``predict.py bench`` times the model at batch 1. Inlined after ``pipeline/edge.py`` by
``pipeline.bundle.runtime_source``, so it needs nothing but what edge.py needs; printing happens only here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline.edge import KERNELS, bench, load_card, predict_each
from pipeline.errors import PipelineError
from pipeline.task_output import task_row


def default_model(folder) -> Path:
    """The model a bundle's predict.py uses: the card's int8 file, else float32, else any .tflite there."""
    folder = Path(folder)
    files = load_card(folder).get("files", {})
    for fmt in ("int8", "float32", *files):
        name = files.get(fmt, {}).get("file")
        if name and (folder / name).is_file():
            return folder / name
    for pattern in ("*int8*.tflite", "*float32*.tflite", "*.tflite"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise PipelineError(f"no .tflite model in {folder}; pass --model FILE")


def main(argv=None) -> int:
    """``predict.py [predict] [--model M] IMAGE...`` or ``predict.py bench [--model M]``; also
    ``python -m pipeline.edge predict MODEL IMAGE...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("predict", "bench") else "predict"
    parser = argparse.ArgumentParser(prog=f"predict.py {command}", description=main.__doc__)
    parser.add_argument("--model", help="the .tflite file (default: int8, else float32, next to this script)")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    if command == "predict":
        parser.add_argument("--top-k", type=int, default=3, help="labels shown per image")
        parser.add_argument("--mask-dir", default="masks", help="segmentation models: where the predicted "
                            "masks are written as <image>.mask.png (default: ./masks)")
        parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF, WEBP, TIFF); .npy "
                            "sequences or .wav clips for a sequence or audio model")
    else:
        parser.add_argument("--runs", type=int, default=100, help="timed inferences")
        parser.add_argument("--warmup", type=int, default=10, help="untimed inferences first")
        parser.add_argument("--kernels", choices=list(KERNELS), default="default",
                            help="LiteRT's default delegate (XNNPACK), its builtin kernels, or its "
                                 "reference kernels")
        parser.add_argument("--no-amx", action="store_true",
                            help="keep XNNPACK off Intel AMX (Linux x86-64), as on a CPU without it")
        parser.add_argument("positional_model", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return _predict_cli(args) if command == "predict" else _bench_cli(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except BrokenPipeError:  # `python predict.py *.png | head`: the reader has gone; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


def _predict_cli(args) -> int:
    images = list(args.images)
    model = args.model
    if model is None and images[0].endswith(".tflite"):
        model = images.pop(0)
    if not images:
        raise PipelineError("no image given")
    model = model or default_model(Path(__file__).resolve().parent)
    card = load_card(model)
    rows, failed = [], 0
    for path, result, error in predict_each(model, images, args.top_k, num_threads=args.threads):
        if error:  # one line for the bad file; the others still get their results
            failed += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
            rows.append({"image": path, "error": error})
        elif card.get("task"):  # detected objects or a mask
            row, text = task_row(path, result, card, args.mask_dir)
            rows.append(row)
            if not args.json:
                print(text, flush=True)
        elif args.json:
            rows.append({"image": path, "top": [{"label": n, "score": s} for n, s in result]})
        else:
            print(f"{path}: " + ", ".join(f"{n} ({s:.3f})" for n, s in result), flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 1 if failed else 0


def _bench_cli(args) -> int:
    model = args.model or args.positional_model or default_model(Path(__file__).resolve().parent)
    result = bench(model, args.runs, args.warmup, args.threads, args.kernels, args.no_amx)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['model']}: init {result['init_ms']:.1f} ms, first {result['first_ms']:.2f} ms, "
              f"mean {result['mean_ms']:.3f} / p50 {result['p50_ms']:.3f} / p99 {result['p99_ms']:.3f} ms "
              f"per image over {result['runs']} runs ({result['kernels']} kernels"
              f"{', no AMX' if args.no_amx else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
