"""TFLite model metadata: labels and the input contract inside the ``.tflite`` file.

Writes what TFLite Support's and MediaPipe's metadata writers write, in the published schema
(``metadata_schema.fbs``, file identifier ``M001``): a ``ModelMetadata`` flatbuffer stored as the model
buffer named ``TFLITE_METADATA``, and the associated files (``labels.txt``) packed as an uncompressed zip
appended to the model. MediaPipe Tasks (``ImageClassifier``) and the TFLite Support Task Library read the
class names from it; LiteRT and TFLM ignore both parts. The flatbuffer is built with the ``flatbuffers``
package from the schema's field order below (docs/metadata.md says why no library writes it here).
"""
from __future__ import annotations

import io
import zipfile

import numpy as np

from pipeline.errors import PipelineError

METADATA_NAME = "TFLITE_METADATA"
IDENTIFIER = b"M001"
PARSER_VERSION = "1.0.0"  # every field written here exists since the schema's first version
LABELS_FILE = "labels.txt"

# metadata_schema.fbs, the tables written here, each field in declaration order (= its vtable slot; a
# union takes two slots, its type then its value). Kinds: "string", scalars ("byte", "uint", "int"),
# "[float]", "[string]", a table name, "[Table]" for a vector of tables, ("union", {member: type code}).
TABLES = {
    "ModelMetadata": [("name", "string"), ("description", "string"), ("version", "string"),
                      ("subgraph_metadata", "[SubGraphMetadata]"), ("author", "string"),
                      ("license", "string"),
                      ("associated_files", "[AssociatedFile]"), ("min_parser_version", "string")],
    "SubGraphMetadata": [("name", "string"), ("description", "string"),
                         ("input_tensor_metadata", "[TensorMetadata]"),
                         ("output_tensor_metadata", "[TensorMetadata]"),
                         ("associated_files", "[AssociatedFile]")],
    "TensorMetadata": [("name", "string"), ("description", "string"), ("dimension_names", "[string]"),
                       ("content", "Content"), ("process_units", "[ProcessUnit]"), ("stats", "Stats"),
                       ("associated_files", "[AssociatedFile]")],
    "Content": [("content_properties", ("union", {"FeatureProperties": 1, "ImageProperties": 2})),
                ("range", "ValueRange")],
    "FeatureProperties": [],
    "ImageProperties": [("color_space", "byte"), ("default_size", "ImageSize")],
    "ImageSize": [("width", "uint"), ("height", "uint")],
    "ValueRange": [("min", "int"), ("max", "int")],
    "ProcessUnit": [("options", ("union", {"NormalizationOptions": 1}))],
    "NormalizationOptions": [("mean", "[float]"), ("std", "[float]")],
    "Stats": [("max", "[float]"), ("min", "[float]")],
    "AssociatedFile": [("name", "string"), ("description", "string"), ("type", "byte"),
                       ("locale", "string"), ("version", "string")],
}
ENUMS = {("ImageProperties", "color_space"): ["UNKNOWN", "RGB", "GRAYSCALE"],
         ("AssociatedFile", "type"): ["UNKNOWN", "DESCRIPTIONS", "TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS",
                                      "TENSOR_AXIS_SCORE_CALIBRATION", "VOCABULARY", "SCANN_INDEX_FILE"]}


def _slots(table: str) -> list[tuple[str, object, int]]:
    out, slot = [], 0
    for name, kind in TABLES[table]:
        out.append((name, kind, slot))
        slot += 2 if isinstance(kind, tuple) else 1
    return out


# ---- encoding ---------------------------------------------------------------------------------------------
def _vector(builder, offsets: list, prepend) -> int:
    builder.StartVector(4, len(offsets), 4)
    for value in reversed(offsets):
        prepend(value)
    return builder.EndVector()


def _encode(builder, table: str, obj: dict) -> int:
    """Children first (a flatbuffer is built back to front), then the table with its slots."""
    refs = {}
    for name, kind, _ in _slots(table):
        value = obj.get(name)
        if value is None or value == "" or isinstance(kind, tuple) and not value:
            continue
        if kind == "string":
            refs[name] = builder.CreateString(value)
        elif kind == "[float]":
            refs[name] = _vector(builder, [float(v) for v in value], builder.PrependFloat32)
        elif kind == "[string]":
            refs[name] = _vector(builder, [builder.CreateString(v) for v in value],
                                 builder.PrependUOffsetTRelative)
        elif isinstance(kind, tuple):  # union: (member name, its fields)
            refs[name] = (kind[1][value[0]], _encode(builder, value[0], value[1]))
        elif kind.startswith("["):
            refs[name] = _vector(builder, [_encode(builder, kind[1:-1], v) for v in value],
                                 builder.PrependUOffsetTRelative)
        elif kind in TABLES:
            refs[name] = _encode(builder, kind, value)
    slots = _slots(table)
    builder.StartObject(sum(2 if isinstance(k, tuple) else 1 for _, k, _ in slots))
    for name, kind, slot in slots:
        value = obj.get(name)
        if isinstance(kind, tuple) and name in refs:
            builder.PrependUint8Slot(slot, refs[name][0], 0)
            builder.PrependUOffsetTRelativeSlot(slot + 1, refs[name][1], 0)
        elif name in refs:
            builder.PrependUOffsetTRelativeSlot(slot, refs[name], 0)
        elif kind in ("byte", "uint", "int") and value is not None:
            if (table, name) in ENUMS:
                value = ENUMS[table, name].index(value)
            prepend = {"byte": builder.PrependInt8Slot, "uint": builder.PrependUint32Slot,
                       "int": builder.PrependInt32Slot}[kind]
            prepend(slot, int(value), 0)
    return builder.EndObject()


def encode(model_metadata: dict) -> bytes:
    """A ``ModelMetadata`` dict (field names of the schema, enums by name) -> the M001 flatbuffer."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(_encode(builder, "ModelMetadata", model_metadata), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


# ---- decoding ---------------------------------------------------------------------------------------------
def _decode(tab, table: str) -> dict:
    from flatbuffers import number_types as N
    from flatbuffers.table import Table

    out = {}
    for name, kind, slot in _slots(table):
        o = tab.Offset(4 + 2 * slot)
        if isinstance(kind, tuple):
            code = tab.Get(N.Uint8Flags, o + tab.Pos) if o else 0
            value_off = tab.Offset(4 + 2 * (slot + 1))
            if code and value_off:
                member = {v: k for k, v in kind[1].items()}.get(code, f"type {code}")
                sub = Table(bytearray(), 0)
                tab.Union(sub, value_off)
                out[name] = (member, _decode(sub, member) if member in TABLES else {})
            continue
        if not o:
            continue
        if kind in ("byte", "uint", "int"):
            flags = {"byte": N.Int8Flags, "uint": N.Uint32Flags, "int": N.Int32Flags}[kind]
            value = tab.Get(flags, o + tab.Pos)
            names = ENUMS.get((table, name))
            out[name] = names[value] if names and 0 <= value < len(names) else value
        elif kind == "string":
            out[name] = tab.String(o + tab.Pos).decode()
        elif kind.startswith("["):
            start, n = tab.Vector(o), tab.VectorLen(o)
            item = kind[1:-1]
            if item == "float":
                out[name] = [tab.Get(N.Float32Flags, start + 4 * i) for i in range(n)]
            elif item == "string":
                out[name] = [tab.String(start + 4 * i).decode() for i in range(n)]
            else:
                out[name] = [_decode(Table(tab.Bytes, tab.Indirect(start + 4 * i)), item) for i in range(n)]
        else:
            out[name] = _decode(Table(tab.Bytes, tab.Indirect(o + tab.Pos)), kind)
    return out


def decode(buf: bytes) -> dict:
    """An M001 flatbuffer -> the ``ModelMetadata`` dict :func:`encode` takes."""
    from flatbuffers import encode as fb_encode, packer
    from flatbuffers.table import Table

    buf = bytearray(buf)
    if len(buf) < 8 or bytes(buf[4:8]) != IDENTIFIER:
        raise PipelineError("TFLite metadata buffer has no M001 identifier")
    return _decode(Table(buf, fb_encode.Get(packer.uoffset, buf, 0)), "ModelMetadata")


# ---- the model file ---------------------------------------------------------------------------------------
def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _aligned(schema, buffer):
    """A BufferT that packs its bytes 16-byte aligned, as the converter does (microcontroller kernels read
    int32 biases in place; the generated Pack aligns to 1)."""
    class AlignedBufferT(schema.BufferT):
        def Pack(self, builder):
            data = None
            if self.data is not None:
                payload = np.asarray(self.data, np.uint8).tobytes()
                builder.StartVector(1, len(payload), 16)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    out = AlignedBufferT()
    out.data, out.offset, out.size = buffer.data, buffer.offset, buffer.size
    return out


def _load(model_bytes: bytes):
    from pipeline import audit

    return audit.parse(model_bytes)


def _pack(model) -> bytes:
    import flatbuffers

    schema = _schema()
    model.buffers = [_aligned(schema, b) for b in (model.buffers or [])]
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def strip(model_bytes: bytes) -> bytes:
    """The model without TFLite metadata and without appended files (what a microcontroller flashes)."""
    model = _load(model_bytes)
    entries = [m for m in (model.metadata or []) if _name(m.name) == METADATA_NAME]
    if not entries and not has_appended_files(model_bytes):
        return bytes(model_bytes)
    for entry in entries:
        model.buffers[entry.buffer].data = None
        model.metadata.remove(entry)
    last = len(model.buffers) - 1
    while last > 0 and model.buffers[last].data is None and not _used(model, last):
        model.buffers.pop()
        last -= 1
    return _pack(model)


def _used(model, index: int) -> bool:
    tensors = [t for sg in (model.subgraphs or []) for t in (sg.tensors or [])]
    return any(t.buffer == index for t in tensors) or any(m.buffer == index for m in (model.metadata or []))


def has_appended_files(model_bytes: bytes) -> bool:
    return zipfile.is_zipfile(io.BytesIO(bytes(model_bytes)))


def _io_tensor(model, index: int) -> dict:
    schema = _schema()
    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    t = model.subgraphs[0].tensors[index]
    q = t.quantization
    scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
    zero = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
    return {"shape": [int(s) for s in t.shape], "dtype": dtypes.get(t.type, str(t.type)),
            "scale": scale, "zero_point": zero}


def _input_description(x: dict, color: str | None) -> str:
    shape = x["shape"]
    what = f"{color} image {shape[1]}x{shape[2]}" if color else f"tensor {shape}"
    if not x["scale"]:
        return f"{what}: raw pixels 0..255 as {x['dtype']} (the model rescales itself)"
    if x["scale"] == 1.0 and x["zero_point"] == 0 and x["dtype"] == "uint8":
        return f"{what}: raw pixels 0..255 as uint8 (quantization scale 1, zero point 0)"
    return (f"{what}: pixels 0..255 quantized as round(pixel / {x['scale']:.6g} + {x['zero_point']}) "
            f"in {x['dtype']}")


def build(model_bytes: bytes, class_names: list, *, name: str, description: str = "", version: str = "",
          author: str = "cnnpipe", mean: float = 0.0, std: float = 1.0) -> dict:
    """The ``ModelMetadata`` dict of an image classifier: what its tensors are and how to feed them.

    ``mean``/``std``: a runtime feeds a float input ``(pixel - mean) / std``; cnnpipe models take raw
    pixels (they rescale themselves), hence 0 and 1. A uint8 input takes the pixels as they are.
    """
    model = _load(model_bytes)
    if not model.subgraphs or len(model.subgraphs[0].inputs) != 1 or len(model.subgraphs[0].outputs) != 1:
        raise PipelineError("metadata: expected a model with one input and one output")
    x = _io_tensor(model, model.subgraphs[0].inputs[0])
    y = _io_tensor(model, model.subgraphs[0].outputs[0])
    n = int(y["shape"][-1]) if len(y["shape"]) > 1 else 0  # the class axis: last ([1, N], or per pixel)
    if n != len(class_names):
        raise PipelineError(f"metadata: the output's class axis has {n} scores but {len(class_names)} "
                            "class names were given")
    bad = [c for c in class_names if not str(c) or "\n" in str(c) or "\r" in str(c)]
    if bad:
        raise PipelineError(f"metadata: class name {bad[0]!r} cannot be a line of {LABELS_FILE}")
    shape = x["shape"]
    channels = shape[-1] if len(shape) == 4 else 1
    color = {1: "GRAYSCALE", 3: "RGB"}.get(channels) if len(shape) == 4 else None
    size = {"width": shape[2], "height": shape[1]} if color else None
    content = ("ImageProperties", {"color_space": color, "default_size": size}) if color else (
        "FeatureProperties", {})
    input_meta = {
        "name": "image" if color else "input",
        "description": _input_description(x, color),
        "content": {"content_properties": content},
        "process_units": [{"options": ("NormalizationOptions", {"mean": [mean] * channels,
                                                                "std": [std] * channels})}],
        "stats": {"max": [(255.0 - mean) / std] * channels, "min": [(0.0 - mean) / std] * channels},
    }
    labels_file = {"name": LABELS_FILE, "description": "Class names, one per line, in output order.",
                   "type": "TENSOR_AXIS_LABELS"}
    output_meta = {
        "name": "probability",
        "description": (f"Probabilities of the {n} classes, in the order of {LABELS_FILE}."
                        if len(y["shape"]) == 2 else f"Scores {y['shape']}: the last axis holds the {n} "
                        f"classes, in the order of {LABELS_FILE}."),
        "content": {"content_properties": ("FeatureProperties", {})},
        "stats": {"max": [1.0], "min": [0.0]},
        "associated_files": [labels_file],
    }
    return {"name": name, "description": description, "version": version, "author": author,
            "subgraph_metadata": [{"input_tensor_metadata": [input_meta],
                                   "output_tensor_metadata": [output_meta]}],
            "min_parser_version": PARSER_VERSION}


def embed(model_bytes: bytes, class_names: list, **info) -> bytes:
    """The ``.tflite`` bytes with metadata (:func:`build`; ``info`` names the model) and labels.txt packed.

    As the TFLite Support / MediaPipe populator does: the metadata becomes the buffer named TFLITE_METADATA
    (replacing an earlier one), the model is repacked, then the associated files are appended as a zip.
    """
    meta = encode(build(model_bytes, class_names, **info))
    model = _load(model_bytes)
    schema = _schema()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(meta, np.uint8)
    model.metadata = list(model.metadata or [])
    existing = [m for m in model.metadata if _name(m.name) == METADATA_NAME]
    if existing:
        model.buffers[existing[0].buffer] = buffer
    else:
        model.buffers = list(model.buffers or [])
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata.append(entry)
    out = io.BytesIO()
    out.write(_pack(model))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, "\n".join(str(c) for c in class_names) + "\n")
    return out.getvalue()


def read(model_bytes: bytes) -> dict | None:
    """{"metadata": the ModelMetadata dict, "files": {name: bytes}} of a file, or None when it has none."""
    schema = _schema()
    data = bytes(model_bytes)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise PipelineError(f"not a TFLite model (no TFL3 flatbuffer identifier, {len(data)} bytes)")
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _name(entry.Name()) == METADATA_NAME:
                raw = model.Buffers(entry.Buffer()).DataAsNumpy()
                meta = decode(raw.tobytes() if isinstance(raw, np.ndarray) else b"")
                files = {}
                if has_appended_files(data):
                    with zipfile.ZipFile(io.BytesIO(data)) as archive:
                        files = {n: archive.read(n) for n in archive.namelist()}
                return {"metadata": meta, "files": files}
    except PipelineError:
        raise
    except Exception as exc:  # a truncated or corrupt file fails anywhere inside the generated code
        raise PipelineError(f"corrupt TFLite metadata ({type(exc).__name__}: {exc})") from None
    return None


def labels(model_bytes: bytes) -> list[str]:
    """The class names packed in the file (its TENSOR_AXIS_LABELS file), [] when it has none."""
    found = read(model_bytes)
    if not found:
        return []
    outputs = found["metadata"].get("subgraph_metadata", [{}])[0].get("output_tensor_metadata", [])
    for f in (outputs[0].get("associated_files", []) if outputs else []):
        if f.get("type") == "TENSOR_AXIS_LABELS" and f.get("name") in found["files"]:
            return found["files"][f["name"]].decode().splitlines()
    return []
