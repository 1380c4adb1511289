"""``cnnpipe predict`` and ``cnnpipe bench``: a .tflite model run with LiteRT, no TensorFlow imported.

Labels, input size, channels and resize policy come from ``model_card.json`` / ``labels.txt`` next to the
model (else from the input tensor). A file that is not a model ends with one line and exit 1; an unreadable
image among several gets one ``error:`` line, the others their results, and the command exits 1 at the end.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

THREADS = click.option("--threads", type=click.IntRange(min=1), default=None,
                       help="Interpreter threads (default: LiteRT's choice).")


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Labels shown per image.")
@THREADS
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--mask-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("masks"),
              show_default=True, help="Segmentation models: where <image>.mask.png files are written.")
def predict(model, images, top_k, threads, as_json, mask_dir):
    """Classify IMAGE files with MODEL (.tflite): top-k labels with scores.

    A detection model prints the objects it found (class, x, y in pixels, score); a segmentation model writes
    a mask PNG of class indices per image into --mask-dir and prints each class's share of the pixels.

    A sequence model takes .npy files and an audio model .wav clips instead (the model card's input.encoding
    says which); they are encoded exactly as ingest did.

    An image that cannot be read (missing, corrupt, a decompression bomb) gets one error line and the others
    are still classified; the exit code is then 1.
    """
    from pipeline import edge, task_output

    width = max(len(str(p)) for p in images)
    card = edge.load_card(model)
    rows, failed = [], 0
    for path, result, error in edge.predict_each(model, [str(p) for p in images], top_k, num_threads=threads):
        if error:
            failed += 1
            click.secho(f"error: {error}", err=True, fg="red")
            rows.append({"image": path, "error": error})
        elif card.get("task"):
            row, text = task_output.task_row(path, result, card, mask_dir)
            rows.append(row)
            if not as_json:
                click.echo(text)
        elif as_json:
            rows.append({"image": path, "top": [{"label": n, "score": round(s, 6)} for n, s in result]})
        else:
            cells = "  ".join(f"{name} {score:.3f}" for name, score in result)
            click.echo(f"{path:<{width}}  {click.style(result[0][0], bold=True)}  ({cells})")
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    if failed:
        raise SystemExit(1)


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True, help="Timed inferences.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed inferences before timing.")
@THREADS
@click.option("--kernels", type=click.Choice(["default", "builtin", "reference"]), default="default",
              show_default=True, help="LiteRT's default delegate (XNNPACK on CPUs), its builtin kernels "
              "without it, or its reference kernels.")
@click.option("--no-amx", is_flag=True,
              help="Keep XNNPACK off Intel AMX (Linux x86-64), so it runs the kernels of a CPU without AMX, "
              "as on the devices the files go to; nothing changes on other CPUs.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures to this JSON file.")
def bench(model, runs, warmup, threads, kernels, no_amx, json_out):
    """Time MODEL (.tflite) at batch 1: init, first inference, mean / p50 / p99 per image."""
    from pipeline import edge

    r = edge.bench(model, runs, warmup, threads, kernels, no_amx)
    io = r["input"]
    click.echo(f"{model}  ({io['dtype']} input {io['shape']}, threads {threads or 'default'}, "
               f"{kernels} kernels{', no AMX' if no_amx else ''})")
    click.echo(f"  init            {r['init_ms']:10.3f} ms\n  first inference {r['first_ms']:10.3f} ms")
    for key in ("mean", "p50", "p99", "min", "max"):
        click.echo(f"  {key:<15} {r[key + '_ms']:10.3f} ms")
    click.echo(f"  over {r['runs']} runs after {r['warmup']} warm-up runs")
    if json_out:
        from pipeline.artifacts import write_json

        write_json(json_out, r)
        click.echo(f"  written: {json_out}")
