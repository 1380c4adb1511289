"""The layer spec: a model written as a list of blocks in the words of a CNN course.

``model.layers`` (or a preset) is a list of one-key mappings, ``{conv: {filters: 16, kernel: 3}}``,
``{bn: {}}``, ``{dropout: 0.2}``, ``{residual: [...blocks...]}``. :func:`normalize` checks names, keys and
values and fills in defaults; :func:`plan` walks the blocks with the input shape and returns one :class:`Op`
per Keras layer (output shape, parameters, MACs, receptive field) without importing TensorFlow, so a bad spec
or a model too large for the machine is refused before Keras builds anything; :func:`to_keras` then builds
exactly that graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.errors import ConfigError

REQUIRED = object()
PADDINGS = ("same", "valid")
POOLS = ("max", "avg")
ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "swish", "hard_swish", "elu", "leaky_relu", "linear")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform")

# block -> key -> default (REQUIRED when the key must be given)
BLOCKS = {
    "conv": {"filters": REQUIRED, "kernel": 3, "stride": 1, "padding": "same", "bias": True},
    "depthwise_conv": {"kernel": 3, "stride": 1, "padding": "same", "multiplier": 1, "bias": True},
    "separable_conv": {"filters": REQUIRED, "kernel": 3, "stride": 1, "padding": "same", "bias": True},
    "conv1d": {"filters": REQUIRED, "kernel": 3, "stride": 1, "padding": "same", "bias": True},
    "pool": {"type": "max", "size": 2, "stride": None, "padding": "valid"},
    "global_pool": {"type": "avg"},
    "bn": {"momentum": 0.9},
    "relu": {},
    "relu6": {},
    "activation": {"name": REQUIRED},
    "dropout": {"rate": REQUIRED},
    "dense": {"units": REQUIRED, "activation": "linear"},
    "flatten": {},
    "residual": None,  # a list of blocks
}
SCALAR = {"dropout": "rate", "activation": "name"}  # blocks that take their one value bare: {dropout: 0.2}


def _err(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def _pair(where: str, key: str, value, lo: int) -> tuple[int, int]:
    items = value if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise _err(where, f"{key} must be an integer or [height, width], got {value!r}")
    if min(items) < lo:
        raise _err(where, f"{key} must be at least {lo}, got {value!r}")
    return int(items[0]), int(items[1])


def _positive_int(where: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _err(where, f"{key} must be a positive integer, got {value!r}")
    return value


def _check_args(kind: str, args: dict, where: str) -> dict:
    """Defaults filled in, every value checked."""
    known = BLOCKS[kind]
    unknown = [k for k in args if k not in known]
    if unknown:
        raise _err(where, f"unknown key {unknown[0]!r} (known: {', '.join(known) or 'none'})")
    out = {k: args.get(k, d) for k, d in known.items()}
    missing = [k for k, v in out.items() if v is REQUIRED]
    if missing:
        raise _err(where, f"missing key {missing[0]!r}")
    for key in ("filters", "units", "multiplier"):
        if key in out:
            out[key] = _positive_int(where, key, out[key])
    if "kernel" in out:
        out["kernel"] = _pair(where, "kernel", out["kernel"], 1)
    if kind == "pool":
        out["size"] = _pair(where, "size", out["size"], 1)
        out["stride"] = out["size"] if out["stride"] is None else _pair(where, "stride", out["stride"], 1)
    elif "stride" in out:
        out["stride"] = _pair(where, "stride", out["stride"], 1)
    if kind == "conv1d":
        out["kernel"], out["stride"] = (out["kernel"][0],), (out["stride"][0],)
    if "padding" in out and out["padding"] not in PADDINGS:
        raise _err(where, f"padding must be one of {', '.join(PADDINGS)}, got {out['padding']!r}")
    if "type" in out and out["type"] not in POOLS:
        raise _err(where, f"type must be one of {', '.join(POOLS)}, got {out['type']!r}")
    for key in ("bias",):
        if key in out and not isinstance(out[key], bool):
            raise _err(where, f"{key} must be true or false, got {out[key]!r}")
    act = out.get("name") if kind == "activation" else out.get("activation")
    if act is not None and act not in ACTIVATIONS:
        raise _err(where, f"activation {act!r} is not one of {', '.join(ACTIVATIONS)}")
    if kind == "dropout":
        rate = out["rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise _err(where, f"rate must be a number in [0, 1), got {rate!r}")
        out["rate"] = float(rate)
    if kind == "bn":
        m = out["momentum"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < 1:
            raise _err(where, f"momentum must be a number in (0, 1), got {m!r}")
    return out


def normalize(layers, where: str = "model.layers") -> list[tuple[str, object]]:
    """``[(kind, args)]`` with defaults filled in (``args`` of a residual is its normalized block list)."""
    if not isinstance(layers, list):
        raise _err(where, f"expected a list of blocks, got {layers!r}")
    out = []
    for i, item in enumerate(layers):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise _err(here, f"a block is a mapping with one key, like {{conv: {{filters: 16}}}}, "
                             f"got {item!r}")
        (kind, args), = item.items()
        if kind not in BLOCKS:
            raise _err(here, f"unknown block {kind!r} (known: {', '.join(BLOCKS)})")
        here = f"{here} ({kind})"
        if kind == "residual":
            if not isinstance(args, list) or not args:
                raise _err(here, "expected a non-empty list of blocks")
            out.append((kind, normalize(args, f"{where}[{i}]")))
            continue
        if kind in SCALAR and not isinstance(args, dict):
            args = {SCALAR[kind]: args}
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise _err(here, f"expected a mapping of keys, got {args!r}")
        out.append((kind, _check_args(kind, args, here)))
    return out


def to_yaml_blocks(blocks: list) -> list:
    """Normalized blocks back to the plain spec (tuples as lists, defaults kept): what --show-spec prints."""
    out = []
    for kind, args in blocks:
        if kind == "residual":
            out.append({kind: to_yaml_blocks(args)})
            continue
        clean = {}
        for key, value in args.items():
            if isinstance(value, tuple):
                value = value[0] if len(set(value)) == 1 else list(value)
            clean[key] = value
        out.append({kind: clean})
    return out


# ---------------------------------------------------------------- shapes, parameters, MACs


@dataclass
class Op:
    """One Keras layer of the planned model."""
    name: str
    kind: str
    block: str                      # where it comes from: "model.layers[3]" / "preset resnet8 [3]"
    args: dict
    inputs: list                    # names of the ops it reads
    in_shape: tuple                 # without the batch axis
    out_shape: tuple
    params: int = 0
    macs: int = 0
    rf: tuple = ()                  # receptive field of one output element per spatial axis, in pixels
    jump: tuple = ()                # distance in input pixels between neighbouring outputs
    held: int = 0                   # elements of other tensors kept alive meanwhile (a residual's skip input)
    extra: dict = field(default_factory=dict)


def _shape(s) -> str:
    return "x".join(map(str, s))


def _spatial_out(size: tuple, kernel: tuple, stride: tuple, padding: str, what: str, where: str,
                 shape: tuple) -> tuple:
    if any(k > s for k, s in zip(kernel, size)):
        raise _err(where, f"{what} {_shape(kernel)} is larger than its input {_shape(shape)}"
                          + (" (the spatial size would reach zero)" if padding == "valid" else ""))
    if padding == "same":
        return tuple(-(-s // st) for s, st in zip(size, stride))
    out = tuple((s - k) // st + 1 for s, k, st in zip(size, kernel, stride))
    if min(out) < 1:
        raise _err(where, f"the spatial size reaches zero after {what} {_shape(kernel)} on {_shape(shape)}")
    return out


class Planner:
    def __init__(self, input_shape: tuple, initializer: str = "glorot_uniform", l2: float = 0.0):
        self.ops: list[Op] = []
        self.initializer, self.l2 = initializer, l2
        shape = tuple(int(s) for s in input_shape)
        nd = len(shape) - 1
        self.ops.append(Op("rescale", "rescale", "input", {}, [], shape, shape, rf=(1,) * nd, jump=(1,) * nd))

    def add(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def blocks(self, blocks: list, prev: Op, where: str, prefix: str, held: int = 0) -> Op:
        for i, (kind, args) in enumerate(blocks):
            here, name = f"{where}[{i}] ({kind})", f"{prefix}{i}_{kind}"
            if kind == "residual":
                prev = self.residual(args, prev, f"{where}[{i}]", f"{prefix}{i}_", here, held)
            else:
                prev = self.block(kind, args, prev, here, name, held)
        return prev

    def block(self, kind: str, args: dict, prev: Op, where: str, name: str, held: int) -> Op:
        shape, rf, jump = prev.out_shape, prev.rf, prev.jump
        spatial, c = shape[:-1], shape[-1]
        if kind == "conv1d" and len(shape) == 3:
            if shape[0] != 1:
                raise _err(where, f"conv1d needs a sequence or a one-row image [1, length], "
                                  f"got {_shape(shape)}")
            prev = self.add(Op(f"{name}_to_sequence", "reshape", where, {}, [prev.name], shape, shape[1:],
                               rf=rf[1:], jump=jump[1:], held=held))
            shape, rf, jump = prev.out_shape, prev.rf, prev.jump
            spatial, c = shape[:-1], shape[-1]
        conv_like = kind in ("conv", "depthwise_conv", "separable_conv", "conv1d", "pool")
        if conv_like or kind in ("global_pool", "flatten"):
            want = 1 if kind == "conv1d" else (None if kind in ("pool", "global_pool", "flatten") else 2)
            if not spatial or (want is not None and len(spatial) != want):
                need = {1: "a sequence [length, channels]", 2: "an image [height, width, channels]"}.get(
                    want, "a spatial input")
                raise _err(where, f"needs {need}, got {_shape(shape)}")
        op = Op(name, kind, where, args, [prev.name], shape, shape, rf=rf, jump=jump, held=held)
        if conv_like:
            if kind == "pool":
                kernel, stride = args["size"][:len(spatial)], args["stride"][:len(spatial)]
                what = "pool size"
            else:
                kernel, stride, what = args["kernel"], args["stride"], "kernel"
            out = _spatial_out(spatial, kernel, stride, args["padding"], what, where, shape)
            kk = math.prod(kernel)
            if kind in ("conv", "conv1d"):
                oc = args["filters"]
                op.params = kk * c * oc + (oc if args["bias"] else 0)
                op.macs = math.prod(out) * oc * kk * c
            elif kind == "depthwise_conv":
                oc = c * args["multiplier"]
                op.params = kk * oc + (oc if args["bias"] else 0)
                op.macs = math.prod(out) * oc * kk
            elif kind == "separable_conv":
                oc = args["filters"]
                op.params = kk * c + c * oc + (oc if args["bias"] else 0)
                op.macs = math.prod(out) * c * (kk + oc)
                op.extra["intermediate"] = math.prod(out) * c  # depthwise output before the 1x1 conv
            else:
                oc = c
            op.out_shape = (*out, oc)
            op.rf = tuple(r + (k - 1) * j for r, k, j in zip(rf, kernel, jump))
            op.jump = tuple(j * s for j, s in zip(jump, stride))
        elif kind == "global_pool":
            op.out_shape = (c,)
            op.rf = tuple(r + (s - 1) * j for r, s, j in zip(rf, spatial, jump))
        elif kind == "flatten":
            op.out_shape = (math.prod(shape),)
            op.rf = tuple(r + (s - 1) * j for r, s, j in zip(rf, spatial, jump))
        elif kind == "dense":
            if len(shape) != 1:
                raise _err(where, f"dense needs a flat input (put flatten or global_pool before it), "
                                  f"got {_shape(shape)}")
            op.out_shape = (args["units"],)
            op.params = c * args["units"] + args["units"]
            op.macs = c * args["units"]
        elif kind == "bn":
            op.params = 4 * c  # gamma, beta (trained), moving mean and variance
        return self.add(op)

    def residual(self, blocks: list, prev: Op, where: str, prefix: str, label: str, held: int) -> Op:
        start = prev
        skip = math.prod(start.out_shape)
        end = self.blocks(blocks, start, where, f"{prefix}", held + skip)
        s_in, s_out = start.out_shape, end.out_shape
        if len(s_in) != len(s_out) or len(s_in) < 2:
            raise _err(label, f"cannot join the skip connection: input {_shape(s_in)}, branch output "
                              f"{_shape(s_out)} (a residual branch must keep a spatial shape)")
        skip_op = start
        if s_in != s_out:
            stride = tuple(-(-a // b) for a, b in zip(s_in[:-1], s_out[:-1]))
            if any(b > a for a, b in zip(s_in[:-1], s_out[:-1])) or \
                    tuple(-(-a // st) for a, st in zip(s_in[:-1], stride)) != s_out[:-1]:
                raise _err(label, f"cannot join the skip connection: input {_shape(s_in)}, branch output "
                                  f"{_shape(s_out)} (no 1x1 projection maps one onto the other)")
            c_in, c_out = s_in[-1], s_out[-1]
            skip_op = self.add(Op(f"{prefix}proj", "projection", label, {"filters": c_out, "stride": stride},
                                  [start.name], s_in, s_out, params=c_in * c_out + c_out,
                                  macs=math.prod(s_out) * c_in, rf=start.rf,
                                  jump=tuple(j * s for j, s in zip(start.jump, stride)),
                                  held=held + math.prod(end.out_shape)))
        rf = tuple(max(a, b) for a, b in zip(end.rf, skip_op.rf))
        return self.add(Op(f"{prefix}add", "add", label, {}, [end.name, skip_op.name], s_out, s_out,
                           rf=rf, jump=end.jump, held=held))

    def head(self, prev: Op, num_classes: int) -> Op:
        if len(prev.out_shape) != 1:
            prev = self.block("flatten", {}, prev, "class layer", "flatten", 0)
        op = self.block("dense", {"units": num_classes, "activation": "linear"}, prev, "class layer",
                        "logits", 0)
        return self.add(Op("probs", "softmax", "class layer", {}, [op.name], op.out_shape, op.out_shape,
                           rf=op.rf, jump=op.jump))


def plan(blocks: list, input_shape, num_classes: int, where: str = "model.layers",
         initializer: str = "glorot_uniform", l2: float = 0.0, task: str = "classify", stride: int = 8,
         from_preset: bool = False, boxes: bool = False) -> list[Op]:
    """Every op of the model (rescale, the blocks, the task's head) with shapes, parameters and MACs: the
    class layer of a classifier, or the detection / segmentation ends of :mod:`pipeline.models.task_heads`."""
    p = Planner(tuple(input_shape), initializer, l2)
    last = p.blocks(blocks, p.ops[0], where, "b")
    if task == "detect":
        from pipeline.models import task_heads

        task_heads.detect(p, stride, num_classes, from_preset, where, boxes)
    elif task == "segment":
        from pipeline.models import task_heads

        task_heads.segment(p, num_classes, from_preset, where)
    else:
        p.head(last, num_classes)
    return p.ops


# ---------------------------------------------------------------- Keras


def _keras_layer(op: Op, initializer: str, l2: float):
    import keras

    L = keras.layers
    a, n = op.args, op.name
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    w = {"kernel_initializer": initializer, "kernel_regularizer": reg}
    nd = len(op.in_shape) - 1
    if op.kind == "conv":
        return L.Conv2D(a["filters"], a["kernel"], strides=a["stride"], padding=a["padding"],
                        use_bias=a["bias"], name=n, **w)
    if op.kind == "conv1d":
        return L.Conv1D(a["filters"], a["kernel"], strides=a["stride"], padding=a["padding"],
                        use_bias=a["bias"], name=n, **w)
    if op.kind == "depthwise_conv":
        return L.DepthwiseConv2D(a["kernel"], strides=a["stride"], padding=a["padding"],
                                 depth_multiplier=a["multiplier"], use_bias=a["bias"], name=n,
                                 depthwise_initializer=initializer, depthwise_regularizer=reg)
    if op.kind == "separable_conv":
        return L.SeparableConv2D(a["filters"], a["kernel"], strides=a["stride"], padding=a["padding"],
                                 use_bias=a["bias"], name=n, depthwise_initializer=initializer,
                                 pointwise_initializer=initializer, depthwise_regularizer=reg,
                                 pointwise_regularizer=reg)
    if op.kind == "transpose_conv":
        return L.Conv2DTranspose(a["filters"], a["kernel"], strides=a["stride"], padding="same", name=n, **w)
    if op.kind == "concat":
        return L.Concatenate(name=n)
    if op.kind == "projection":
        conv = L.Conv2D if nd == 2 else L.Conv1D
        return conv(a["filters"], 1, strides=a["stride"], padding="same", name=n, **w)
    if op.kind == "pool":
        cls = {("max", 2): L.MaxPooling2D, ("avg", 2): L.AveragePooling2D,
               ("max", 1): L.MaxPooling1D, ("avg", 1): L.AveragePooling1D}[(a["type"], nd)]
        return cls(a["size"][:nd], strides=a["stride"][:nd], padding=a["padding"], name=n)
    if op.kind == "global_pool":
        cls = {("max", 2): L.GlobalMaxPooling2D, ("avg", 2): L.GlobalAveragePooling2D,
               ("max", 1): L.GlobalMaxPooling1D, ("avg", 1): L.GlobalAveragePooling1D}[(a["type"], nd)]
        return cls(name=n)
    if op.kind == "dense":
        act = None if a["activation"] == "linear" else a["activation"]
        return L.Dense(a["units"], activation=act, name=n, **w)
    simple = {
        "bn": lambda: L.BatchNormalization(momentum=a["momentum"], name=n),
        "relu": lambda: L.ReLU(name=n),
        "relu6": lambda: L.ReLU(max_value=6.0, name=n),
        "activation": lambda: L.Activation(a["name"], name=n),
        "dropout": lambda: L.Dropout(a["rate"], name=n),
        "flatten": lambda: L.Flatten(name=n),
        "reshape": lambda: L.Reshape(op.out_shape, name=n),
        "add": lambda: L.Add(name=n),
        "softmax": lambda: L.Activation("softmax", dtype="float32", name=n),
        "rescale": lambda: L.Rescaling(1.0 / 255.0, name=n),
    }
    return simple[op.kind]()


def to_keras(ops: list[Op], name: str, initializer: str = "glorot_uniform", l2: float = 0.0):
    """The Keras functional model of a plan: raw pixels in, float32 class probabilities out."""
    import keras

    inputs = keras.Input(shape=ops[0].in_shape, name="pixels")
    tensors = {}
    for op in ops:
        args = [tensors[i] for i in op.inputs] or [inputs]
        layer = _keras_layer(op, initializer, l2)
        tensors[op.name] = layer(args if op.kind in ("add", "concat") else args[0])
    return keras.Model(inputs, tensors[ops[-1].name], name=name)
