"""Audit a converted ``.tflite`` file against the mode it claims to be.

Read straight from the flatbuffer (the schema bundled with ai-edge-litert), not through an interpreter, so a
file holding TensorFlow (Flex) ops, which LiteRT refuses to load, is still described and then rejected.
Every finding is an error (``PipelineError`` naming the op and tensor), never a warning: a "full int8" file
with one float op is not a full int8 file.
"""
from __future__ import annotations

from collections import Counter

from pipeline.config import FORMATS
from pipeline.errors import PipelineError

RESOURCE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
# dtypes allowed per mode: for activations (op inputs/outputs that are not constants) and for constants
_FLOAT = {"float32", "int32", "int64", "bool"}
ACTIVATIONS = {"float32": _FLOAT, "float16": _FLOAT, "dynamic": _FLOAT, "int8": {"int8", "int32"},
               "int16x8": {"int16", "int32"}}
CONSTANTS = {"float32": _FLOAT, "float16": _FLOAT | {"float16"}, "dynamic": _FLOAT | {"int8"},
             "int8": {"int8", "int32"}, "int16x8": {"int8", "int16", "int32", "int64"}}
IO = {"float32": {"float32"}, "float16": {"float32"}, "dynamic": {"float32"}, "int8": {"int8", "uint8"},
      "int16x8": {"int16"}}
HINT = {"float32": "a float32 file holds no quantized tensors",
        "float16": "a float16 file keeps float32 activations and float16 weights",
        "dynamic": "a dynamic-range file keeps float32 activations and int8 weights",
        "int8": "the file is not fully int8 (an op computes in another type)",
        "int16x8": "a 16x8 file has int16 activations and int8 weights"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _enum_names(cls) -> dict:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def parse(model_bytes: bytes):
    """The flatbuffer as a ``schema.ModelT``; a non-model is a one-line PipelineError."""
    data = bytes(model_bytes)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise PipelineError(f"not a TFLite model (no TFL3 flatbuffer identifier, {len(data)} bytes)")
    try:
        return _schema().ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # a truncated or corrupt flatbuffer fails anywhere inside the generated code
        raise PipelineError(f"corrupt TFLite flatbuffer ({type(exc).__name__}: {exc})") from None


def _op_name(code, builtin_names: dict) -> str:
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == _schema().BuiltinOperator.CUSTOM:
        return f"CUSTOM:{_text(code.customCode)}"
    return builtin_names.get(builtin, f"BUILTIN_{builtin}")


def _seq(values) -> list:
    return [] if values is None else list(values)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _tensor(t, buffers: list, dtypes: dict) -> dict:
    buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
    has_data = buf is not None and buf.data is not None and len(buf.data) > 0
    const = has_data or bool(buf is not None and getattr(buf, "offset", 0))  # offset: data after a >2 GB file
    q = t.quantization
    return {"name": _text(t.name), "dtype": dtypes.get(t.type, str(t.type)).lower(), "const": const,
            "shape": [int(s) for s in _seq(t.shape)], "scale": [float(s) for s in _seq(q and q.scale)],
            "zero_point": [int(z) for z in _seq(q and q.zeroPoint)]}


def describe(model) -> dict:
    """Ops (node order) and tensors of every subgraph: what the audit checks, independent of any mode."""
    schema = _schema()
    builtins, dtypes = _enum_names(schema.BuiltinOperator), _enum_names(schema.TensorType)
    op_names = [_op_name(code, builtins) for code in _seq(model.operatorCodes)]
    buffers = _seq(model.buffers)
    graphs = []
    for sg in _seq(model.subgraphs):
        nodes = [{"op": op_names[op.opcodeIndex], "inputs": [int(i) for i in _seq(op.inputs) if i >= 0],
                  "outputs": [int(i) for i in _seq(op.outputs) if i >= 0]} for op in _seq(sg.operators)]
        tensors = [_tensor(t, buffers, dtypes) for t in _seq(sg.tensors)]
        graphs.append({"tensors": tensors, "nodes": nodes, "inputs": [int(i) for i in _seq(sg.inputs)],
                       "outputs": [int(i) for i in _seq(sg.outputs)]})
    return {"graphs": graphs}


def _io_entry(graph: dict, index: int) -> dict:
    t = graph["tensors"][index]
    return {"name": t["name"], "dtype": t["dtype"], "shape": t["shape"], "scale": (t["scale"] or [0.0])[0],
            "zero_point": (t["zero_point"] or [0])[0]}


def _violations(graph: dict, fmt: str, io_dtype: str | None) -> list[str]:
    """Every op that runs in a type the mode forbids, as 'op #i NAME input|output tensor 'x' is dtype'."""
    io_ok = {io_dtype} if io_dtype else IO[fmt]
    io_tensors = set(graph["inputs"]) | set(graph["outputs"])
    found = []
    for n, node in enumerate(graph["nodes"]):
        for role in ("inputs", "outputs"):
            for i in node[role]:
                t = graph["tensors"][i]
                allowed = CONSTANTS[fmt] if t["const"] else ACTIVATIONS[fmt]
                if t["dtype"] in allowed or (i in io_tensors and t["dtype"] in io_ok):
                    continue
                kind = "constant" if t["const"] else "tensor"
                found.append(f"op #{n} {node['op']} {role[:-1]} {kind} '{t['name']}' is {t['dtype']}")
    for side in ("inputs", "outputs"):
        for i in graph[side]:
            t = graph["tensors"][i]
            if t["dtype"] not in io_ok:
                want = "/".join(sorted(io_ok))
                found.append(f"model {side[:-1]} '{t['name']}' is {t['dtype']}, expected {want}")
    return found


def _required(graph: dict, fmt: str) -> str | None:
    """What the mode needs to be present at all (e.g. a dynamic-range file with no int8 weight)."""
    const = Counter(t["dtype"] for t in graph["tensors"] if t["const"])
    live = Counter(t["dtype"] for t in graph["tensors"] if not t["const"])
    if fmt == "float16" and not const["float16"]:
        return "no float16 weights: the file is plain float32"
    if fmt == "dynamic" and not const["int8"]:
        return ("no int8 weights: nothing was quantized (the converter skips weight tensors under 1024 "
                "elements; use float32 or int8 for so small a model)")
    if fmt == "int16x8" and not (live["int16"] and const["int8"]):
        return "expected int16 activations and int8 weights"
    return None


def audit(model_bytes: bytes, fmt: str, io_dtype: str | None = None, name: str | None = None) -> dict:
    """Check a converted file against mode ``fmt`` (float32 | float16 | dynamic | int8 | int16x8).

    ``io_dtype`` (int8 | uint8) pins the int8 file's input/output type; by default either is accepted.
    Returns {"ops", "op_counts", "tensor_dtypes", "input", "output"}; raises PipelineError on any finding.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    label = f"{name or 'model'} ({fmt})"
    try:
        info = describe(parse(model_bytes))
        if not info["graphs"] or not info["graphs"][0]["inputs"] or not info["graphs"][0]["outputs"]:
            raise PipelineError("not a TFLite model (no subgraph with inputs and outputs)")
    except PipelineError as exc:
        raise PipelineError(f"{label}: {exc}") from None
    nodes = [node for graph in info["graphs"] for node in graph["nodes"]]
    counts = Counter(node["op"] for node in nodes)
    flex = [op for op in counts if op.startswith("CUSTOM:")]
    if flex:
        flexible = any(op.startswith("CUSTOM:Flex") for op in flex)
        kind = "TensorFlow (Flex / SELECT_TF_OPS)" if flexible else "custom"
        raise PipelineError(f"{label}: {kind} op {flex[0][7:]} cannot run on an edge runtime; "
                            f"convert with TFLITE_BUILTINS only")
    resource = sorted(RESOURCE_OPS & set(counts))
    if resource:
        raise PipelineError(f"{label}: weights are resource variables ({', '.join(resource)} ops): "
                            "the converter did not freeze the model")
    main = info["graphs"][0]
    problems = _violations(main, fmt, io_dtype)
    problems += [p for graph in info["graphs"][1:] for p in _violations(graph, fmt, None)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PipelineError(f"{label}: {problems[0]}{more}; {HINT[fmt]}")
    missing = _required(main, fmt)
    if missing:
        raise PipelineError(f"{label}: {missing}")
    return {"format": fmt, "ops": list(counts), "op_counts": dict(counts),
            "tensor_dtypes": dict(Counter(t["dtype"] for g in info["graphs"] for t in g["tensors"])),
            "input": _io_entry(main, main["inputs"][0]), "output": _io_entry(main, main["outputs"][0])}
