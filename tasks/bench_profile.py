"""The training-speed profile of ``make benchmark``: how fast the default Fashion-MNIST model trains on this
CPU under each setting worth trying — TensorFlow's intra-op and inter-op thread pools, the batch size, XLA,
oneDNN, convolution gradients — measured as training images per second on one real batch held in memory
(``cnnpipe bench-data``: input excluded, the input pipeline is timed beside it and is more than 100x faster).

Every variant runs in its own process (the thread pools and oneDNN are fixed when TensorFlow starts), and the
list runs ``rounds`` times, interleaved, keeping the median: on a shared machine a busy minute then slows
every variant of one round rather than one variant.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

CONFIG = "fashion_mnist.yaml"
VARIANTS = {  # name: (batch size, None: the config's train.batch_size; bench-data arguments; environment)
    "default": (None, [], {}),  # TensorFlow's choice: both pools as wide as the cores, oneDNN on, no XLA
    "intra 1, inter 1": (None, [], {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}),
    "intra 2, inter 1": (None, [], {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}),
    "intra 4, inter 2": (None, [], {"TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "2"}),
    "batch 32": (32, [], {}),
    "batch 64": (64, [], {}),
    "batch 256": (256, [], {}),
    "batch 512": (512, [], {}),
    "XLA (jit_compile)": (None, ["--jit-compile"], {}),
    "oneDNN off": (None, [], {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    # the default computes stride-1 convolution gradients as forward convolutions (pipeline/conv_grad.py)
    "TF backprop kernels": (None, ["--set", "train.conv_backprop=builtin"], {}),
}


def run(work: Path, repo: Path, cnnpipe, rounds: int = 2, steps: int = 30) -> dict:
    """Ingest Fashion-MNIST into ``work`` (skipped when fresh), then time every variant ``rounds`` times."""
    from pipeline import config

    cfg = repo / "configs" / CONFIG
    default_batch = config.load(cfg).train.batch_size
    batches = {name: batch or default_batch for name, (batch, _, _) in VARIANTS.items()}
    cnnpipe(["ingest", "--config", cfg], work)
    rates = {name: [] for name in VARIANTS}
    for r in range(rounds):
        for i, (name, (_, args, env)) in enumerate(VARIANTS.items()):
            out = work / f"profile_{r}_{i}.json"
            cnnpipe(["bench-data", "--config", cfg, "--epochs", "1", "--train-steps", steps,
                     "--batch-size", batches[name], *args, "--json-out", out], work, env=env)
            rates[name].append(json.loads(out.read_text())["training"]["images_per_second"])
    base = statistics.median(rates["default"])
    variants = {}
    for name, (_, args, env) in VARIANTS.items():
        rate = statistics.median(rates[name])
        variants[name] = {"batch_size": batches[name], "args": args, "env": env,
                          "images_per_second": round(rate, 1), "rounds": rates[name],
                          "vs_default": round(rate / base, 2)}
    return {"config": CONFIG, "steps": steps, "rounds": rounds, "variants": variants}


def table(result: dict) -> str:
    lines = [f"{'variant':<20} {'images/s':>9} {'vs default':>10}  each round"]
    for name, v in result["variants"].items():
        rounds = ", ".join(f"{x:,.0f}" for x in v["rounds"])
        lines.append(f"{name:<20} {v['images_per_second']:>9,.0f} {v['vs_default']:>9.2f}x  {rounds}")
    return "\n".join(lines)
