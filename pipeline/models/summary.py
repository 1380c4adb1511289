"""The build summary: per layer the output shape, parameters, MACs and receptive field; in total the
parameters, MACs per inference, the estimated int8 file size and the estimated peak activation memory that
bounds the TFLM tensor arena; the device budget check at build (estimates) and at export (measured figures).

Everything is computed from the plan of :mod:`pipeline.models.spec` (no TensorFlow), so ``build`` can refuse a
model before Keras allocates it. The int8 estimates model what the TFLite converter makes of the layers: batch
normalization and ReLU fold into the convolution before them, dropout vanishes, kernels become int8 with one
int32 bias per output channel and per-channel quantization parameters, activations are int8 (one byte each).
"""
from __future__ import annotations

import math
from pathlib import Path

from pipeline.errors import ConfigError

FOLDED = ("bn", "relu", "relu6", "dropout")       # vanish into the op before them in the int8 file
WEIGHTED = ("conv", "conv1d", "depthwise_conv", "projection", "dense", "transpose_conv")
# Least-squares fits on the six presets converted after brief training (docs/models.md): the flatbuffer
# holds per op its tensors, names and options, per output channel an int32 bias and quantization scales and
# zero points; the TFLM arena holds per output channel the requantization multiplier and shift, per op its
# node and tensor records. Measured / estimated was 0.95-1.03 (file) and 0.96-1.08 (arena) on those six.
FILE_BYTES, OP_BYTES, CHANNEL_BYTES = 0, 580, 32
ARENA_BYTES, ARENA_OP_BYTES, ARENA_CHANNEL_BYTES = 0, 9, 17


def _shape(s) -> str:
    return "x".join(map(str, s))


def _out_channels(op) -> int:
    return op.out_shape[-1]


def nodes(ops) -> list[dict]:
    """The ops the int8 file will hold: [{name, kind, in, out, held, weights, channels}] (elements)."""
    out, by_name = [], {}
    for op in ops:
        if op.kind == "rescale":  # folded into the input's quantization: the int8 input is the raw pixels
            by_name[op.name] = {"name": "input", "kind": "input", "out_shape": op.out_shape}
            continue
        prev = by_name.get(op.inputs[0]) if op.inputs else None
        fused = op.kind == "activation" and op.args.get("name") in ("relu", "relu6", "linear")
        if op.kind in FOLDED or fused:
            if prev is not None:
                by_name[op.name] = prev
            if op.kind == "bn" and prev is not None and prev["kind"] not in WEIGHTED + ("separable_conv",):
                prev["weights"] = prev.get("weights", 0) + 2 * op.out_shape[-1]  # standalone: MUL and ADD
            continue
        ins = [math.prod(by_name[i]["out_shape"]) if i in by_name else 0 for i in op.inputs] \
            or [math.prod(op.in_shape)]
        node = {"name": op.name, "kind": op.kind, "out_shape": op.out_shape, "in": sum(ins),
                "out": math.prod(op.out_shape), "held": op.held, "weights": 0, "channels": 0, "ops": 1}
        if op.kind in WEIGHTED or op.kind == "separable_conv":
            node["weights"] = op.params - (_out_channels(op) if op.kind != "separable_conv" else 0)
            node["channels"] = _out_channels(op)
            if op.kind == "separable_conv":     # a depthwise and a 1x1 op with the depthwise output between
                c = op.in_shape[-1]
                node["weights"] = op.params - (_out_channels(op) if op.args.get("bias") else 0)
                node["channels"] += c
                node["ops"] = 2
                node["in"] = max(node["in"], 0)
                node["intermediate"] = op.extra["intermediate"]
        if op.kind == "transpose_conv":  # TFLM's int8 kernel accumulates into an int32 scratch of the output
            node["scratch"] = 4 * node["out"]
        out.append(node)
        by_name[op.name] = node
    return out


def _live(node) -> int:
    if "intermediate" in node:  # the larger of (input + depthwise output) and (depthwise output + output)
        return node["held"] + max(node["in"], node["out"]) + node["intermediate"]
    return node["held"] + node["in"] + node["out"] + node.get("scratch", 0)


def estimate(ops) -> dict:
    """Totals: parameters, MACs, estimated int8 file bytes, peak activation bytes and TFLM arena bytes."""
    ns = nodes(ops)
    n_ops = sum(n["ops"] for n in ns)
    channels = sum(n["channels"] for n in ns)
    weights = sum(n["weights"] for n in ns)
    int8_bytes = FILE_BYTES + OP_BYTES * n_ops + weights + CHANNEL_BYTES * channels
    peak_node = max(ns, key=_live)
    peak = _live(peak_node)
    arena = ARENA_BYTES + peak + ARENA_OP_BYTES * n_ops + ARENA_CHANNEL_BYTES * channels
    largest = max(ops, key=lambda o: o.params)
    return {"params": sum(o.params for o in ops), "macs": sum(o.macs for o in ops),
            "int8_bytes_estimate": int(int8_bytes), "peak_activation_bytes": int(peak),
            "peak_activation_layer": peak_node["name"], "arena_bytes_estimate": int(arena),
            "largest_layer": largest.name, "largest_layer_params": largest.params,
            "activation_elements": sum(math.prod(o.out_shape) for o in ops)}


def summarize(ops, name: str = "") -> dict:
    """summary.json: one row per layer and the totals."""
    rows = [{"name": o.name, "kind": o.kind, "block": o.block, "output_shape": list(o.out_shape),
             "params": o.params, "macs": o.macs, "receptive_field": list(o.rf)} for o in ops]
    return {"model": name, "input_shape": list(ops[0].in_shape), "layers": rows, "totals": estimate(ops)}


def human(n: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return str(int(n))


def table(summary: dict) -> str:
    """The summary as the table ``cnnpipe build`` prints."""
    head = f"  {'layer':<22} {'kind':<15} {'output':>14} {'params':>10} {'MACs':>12} {'RF':>8}"
    lines = [head, "  " + "-" * (len(head) - 2)]
    for r in summary["layers"]:
        lines.append(f"  {r['name']:<22} {r['kind']:<15} {_shape(r['output_shape']):>14} {r['params']:>10,} "
                     f"{r['macs']:>12,} {_shape(r['receptive_field']) or '-':>8}")
    t = summary["totals"]
    lines += ["  " + "-" * (len(head) - 2),
              f"  parameters {t['params']:,}   MACs per inference {t['macs']:,} ({human(t['macs'])})",
              f"  int8 file ~{t['int8_bytes_estimate']:,} B   "
              f"peak activations ~{t['peak_activation_bytes']:,} B "
              f"(at {t['peak_activation_layer']})   TFLM arena ~{t['arena_bytes_estimate']:,} B",
              f"  largest layer: {t['largest_layer']} ({t['largest_layer_params']:,} parameters)"]
    return "\n".join(lines)


# ---------------------------------------------------------------- limits


def check_memory(totals: dict, where: str, available: int | None = None) -> None:
    """Refuse a model whose float32 training state (weights, gradients, two Adam moments) or whose activations
    for one image do not fit in this machine's memory, before Keras tries to allocate it."""
    if available is None:
        from pipeline.input_pipeline import free_memory

        available = free_memory() or 1 << 62  # 0: the machine does not say; Keras will
    train_bytes = 16 * totals["params"]
    act_bytes = 4 * totals["activation_elements"]
    if train_bytes + act_bytes > available:
        raise ConfigError(
            f"{where}: the model cannot be built on this machine: {human(totals['params'])} parameters "
            f"({human(train_bytes)}B to train in float32) and {human(act_bytes)}B of activations per image, "
            f"{human(available)}B of memory available; use a smaller data.image_size or fewer filters")


def check_budget(totals: dict, budget: dict) -> None:
    """model.budget {flash_kb, ram_kb} against the estimates: a config error naming the largest layer."""
    flash, ram = budget.get("flash_kb"), budget.get("ram_kb")
    if flash is not None and totals["int8_bytes_estimate"] > flash * 1024:
        raise ConfigError(
            f"model.budget.flash_kb: the int8 file is estimated at "
            f"{totals['int8_bytes_estimate'] / 1024:,.1f} KB, "
            f"over the budget of {flash} KB; the largest layer is {totals['largest_layer']} "
            f"({totals['largest_layer_params']:,} parameters)")
    if ram is not None and totals["arena_bytes_estimate"] > ram * 1024:
        raise ConfigError(
            f"model.budget.ram_kb: the tensor arena is estimated at "
            f"{totals['arena_bytes_estimate'] / 1024:,.1f} KB, "
            f"over the budget of {ram} KB; the largest activations are at {totals['peak_activation_layer']} "
            f"({totals['peak_activation_bytes']:,} B live)")


def device_check(budget: dict, summary_path: Path | None, files: dict, folder: Path | None = None,
                 images=None, arena_bytes: int | None = None) -> tuple[dict, list]:
    """The measured int8 file size and TFLM arena beside the build estimates, and the budget failures.

    ``files`` is export's table of converted files (written under ``folder``); unless ``arena_bytes`` is
    given, the arena is measured here in TFLM on the first of ``images`` (raw pixels). Returns (the model
    card's ``device`` section, failure lines for the export gate)."""
    from pipeline import artifacts

    totals = {}
    if summary_path is not None and Path(summary_path).is_file():
        totals = artifacts.read_json(summary_path).get("totals", {})
    out = {"budget": dict(budget), "estimated": {k: totals.get(k) for k in (
        "params", "macs", "int8_bytes_estimate", "peak_activation_bytes", "arena_bytes_estimate")},
        "measured": {}}
    failures = []
    int8 = files.get("int8")
    if int8 is None:
        return out, failures
    out["measured"]["int8_bytes"] = int8["bytes"]
    if arena_bytes is None and images is not None and folder is not None:
        arena_bytes = measure_arena((Path(folder) / int8["file"]).read_bytes(), images)
    if arena_bytes is not None:
        out["measured"]["arena_bytes"] = int(arena_bytes)
    for key, est, meas in (("int8_bytes", "int8_bytes_estimate", "int8_bytes"),
                           ("arena_bytes", "arena_bytes_estimate", "arena_bytes")):
        if totals.get(est) and out["measured"].get(meas):
            out["measured"][f"{key}_vs_estimate"] = round(out["measured"][meas] / totals[est], 3)
    flash, ram = budget.get("flash_kb"), budget.get("ram_kb")
    if flash is not None and int8["bytes"] > flash * 1024:
        failures.append(f"{int8['file']} is {int8['bytes'] / 1024:,.1f} KB, "
                        f"over model.budget.flash_kb = {flash}")
    if ram is not None and arena_bytes is not None and arena_bytes > ram * 1024:
        failures.append(f"{int8['file']} needs a TFLM arena of {arena_bytes / 1024:,.1f} KB, over "
                        f"model.budget.ram_kb = {ram}")
    out["passed"] = not failures
    return out, failures


def measure_arena(blob: bytes, images) -> int:
    """The smallest TFLM tensor arena that runs the int8 file on the first of ``images`` (raw pixels)."""
    from pipeline import micro
    from pipeline.edge import EdgeModel

    inputs = EdgeModel(blob).quantize(images[:1])
    return micro.run_tflm(blob, inputs)[1]
