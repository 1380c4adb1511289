"""Inference with LiteRT only: numpy + ai-edge-litert + Pillow, never TensorFlow.

The same source runs in three places: the library (``EdgeModel``, ``predict_each``, ``predict_files``,
``bench``), the ``cnnpipe predict`` / ``cnnpipe bench`` commands, and, inlined with ``pipeline/imaging.py`` by
``pipeline.bundle.write_runtime``, as the self-contained ``predict.py`` of a published bundle on a device
without TensorFlow. Nothing here prints: the bundle's command line is ``pipeline/bundle_cli.py``, inlined
after it; an image that cannot be read (missing, corrupt, a decompression bomb) is one ``error:`` line there,
the other images still get their results, and the exit code is 1.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

# <pipeline-imports>  replaced by bundle.write_runtime(), which inlines these modules above it in predict.py
from pipeline.amx import deny
from pipeline.audio import load_features
from pipeline.errors import PipelineError
from pipeline.imaging import load_image
from pipeline.sequence import load_npy
from pipeline.task_output import task_decoder
# </pipeline-imports>

QUANTIZED_DTYPES = (np.int8, np.uint8, np.int16)


def _read_model(model) -> tuple[str, bytes]:
    """(name for messages, flatbuffer bytes); a missing or non-TFLite file is a one-line PipelineError."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        name, content = "<model bytes>", bytes(model)
    else:
        name = str(model)
        try:
            content = Path(model).read_bytes()
        except OSError as exc:
            raise PipelineError(f"{name}: cannot read model file ({exc.strerror or exc})") from None
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise PipelineError(f"{name}: not a TFLite model (no TFL3 identifier; {len(content)} bytes)")
    return name, content


# LiteRT's C++ logger prints this once per process when the default (XNNPACK) delegate is first applied,
# whatever TF_CPP_MIN_LOG_LEVEL says; it is the only line dropped from what the interpreter writes.
DELEGATE_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
_notice_seen = False


@contextlib.contextmanager
def _delegate_notice_dropped():
    """Capture file descriptor 2 while the first interpreter is made; write back all but DELEGATE_NOTICE."""
    global _notice_seen
    try:
        sys.stderr.flush()
        saved = None if _notice_seen else os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            _notice_seen = _notice_seen or any(line.strip() == DELEGATE_NOTICE for line in lines)
            kept = "".join(line for line in lines if line.strip() != DELEGATE_NOTICE)
            if kept:
                os.write(2, kept.encode("utf-8"))


def _interpreter(name: str, content: bytes, num_threads=None, resolver=OpResolverType.AUTO) -> Interpreter:
    try:
        with _delegate_notice_dropped():
            interp = Interpreter(model_content=content, num_threads=num_threads,
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or ["unknown error"])[0]
        raise PipelineError(f"{name}: LiteRT cannot load this model ({first})") from None
    return interp


def _io(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {"dtype": np.dtype(detail["dtype"]).name, "shape": [int(s) for s in detail["shape"]],
            "scale": float(scale), "zero_point": int(zero_point)}


# LiteRT's kernels: its default delegate (XNNPACK on x86 and ARM CPUs), its own optimized builtin kernels
# without that delegate (what a LiteRT build without XNNPACK runs), and its reference kernels (slow, but
# bit-exact)
KERNELS = {"default": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
           "reference": OpResolverType.BUILTIN_REF}


class EdgeModel:
    """A single-input, single-output image classifier in a ``.tflite`` file, run with LiteRT at batch 1."""

    def __init__(self, model, num_threads: int | None = None, kernels: str = "default"):
        """``kernels`` picks LiteRT's kernels (:data:`KERNELS`); ``"reference"`` is the arithmetic
        microcontroller kernels reproduce bit for bit, which golden vectors are computed with."""
        self.name, content = _read_model(model)
        if kernels not in KERNELS:
            raise PipelineError(f"kernels: {kernels!r} is not one of {', '.join(KERNELS)}")
        self._interp = _interpreter(self.name, content, num_threads, KERNELS[kernels])
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise PipelineError(f"{self.name}: expected 1 input and 1 output, not {len(ins)} and {len(outs)}")
        self._in, self._out = ins[0], outs[0]
        # {"dtype", "shape", "scale", "zero_point"} of each side (scale 0.0 when not quantized)
        self.input, self.output = _io(self._in), _io(self._out)
        self.input_dtype, self.output_dtype = np.dtype(self._in["dtype"]), np.dtype(self._out["dtype"])
        self.input_shape = tuple(self.input["shape"])
        self.image_shape = self.input_shape[1:]  # (H, W, C)
        self.num_classes = int(np.prod(self.output["shape"][1:]))

    # ---- inference ---------------------------------------------------------------------------------------
    def quantize(self, images: np.ndarray) -> np.ndarray:
        """Raw pixels -> the input dtype: round(x / scale + zero_point), clipped, for int8/uint8/int16."""
        dtype = self.input_dtype
        if dtype.type not in QUANTIZED_DTYPES:
            return np.asarray(images, dtype=dtype)
        scale, zero_point = self.input["scale"], self.input["zero_point"]
        if scale == 0:
            raise PipelineError(f"{self.name}: {dtype.name} input has no quantization scale")
        info = np.iinfo(dtype)
        q = np.rint(np.asarray(images, np.float32) / np.float32(scale) + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def dequantize(self, raw: np.ndarray) -> np.ndarray:
        """A raw output tensor -> float32 scores."""
        if self.output_dtype.type in QUANTIZED_DTYPES:
            scale, zero_point = self.output["scale"], self.output["zero_point"]
            return ((raw.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)
        return raw.astype(np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"])

    def predict_raw(self, image_q: np.ndarray) -> np.ndarray:
        """Run one already-quantized input (the input dtype, [H,W,C] or [1,H,W,C]); the raw output tensor."""
        x = np.asarray(image_q)
        if x.dtype != self.input_dtype or x.size != int(np.prod(self.input_shape)):
            want = f"{self.input_dtype.name} {list(self.input_shape)}"
            raise PipelineError(f"{self.name}: predict_raw needs {want}, got {x.dtype.name} {list(x.shape)}")
        return self._run(x.reshape(self.input_shape))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 raw pixels [N,H,W,C] (or one [H,W,C]) -> float32 scores [N, num_classes] (a detection or
        segmentation model: [N, *the output's shape])."""
        images = np.asarray(images)
        if images.ndim == len(self.image_shape):
            images = images[None]
        if tuple(images.shape[1:]) != self.image_shape:
            raise PipelineError(f"{self.name}: expects images of shape {list(self.image_shape)}, "
                                f"got {list(images.shape[1:])}")
        x = self.quantize(images)
        scores = np.empty((len(x), self.num_classes), np.float32)
        for i in range(len(x)):  # the files are converted with a fixed batch of 1
            scores[i] = self.dequantize(self._run(x[i:i + 1])).reshape(-1)
        return scores.reshape((len(x), *self.output["shape"][1:]))  # [N, K]; a detection grid, a mask


def _inspector(model) -> Interpreter:
    """An interpreter without the default (XNNPACK) delegate, so every op shows as itself."""
    name, content = _read_model(model)
    return _interpreter(name, content, resolver=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def ops(model) -> list[str]:
    """The op name of every node in execution order (repeats included): ['CONV_2D', 'MAX_POOL_2D', ...]."""
    return [op["op_name"] for op in _inspector(model)._get_ops_details()]


def tensor_details(model) -> list[dict]:
    """Every tensor: index, name, shape, dtype name, quantization scales and zero points."""
    rows = []
    for t in _inspector(model).get_tensor_details():
        q = t["quantization_parameters"]
        rows.append({"index": int(t["index"]), "name": t["name"], "shape": [int(s) for s in t["shape"]],
                     "dtype": np.dtype(t["dtype"]).name, "scales": [float(s) for s in q["scales"]],
                     "zero_points": [int(z) for z in q["zero_points"]]})
    return rows


# ---- files: model card, labels, images ------------------------------------------------------------------
def load_card(model_path) -> dict:
    """``model_card.json`` next to the model, or in the folder given ({} when there is none)."""
    path = Path(model_path)
    path = (path if path.is_dir() else path.parent) / "model_card.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: unreadable model card ({exc})") from None


def class_names(model_path, card: dict, n: int) -> list[str]:
    """Labels from the card, else ``labels.txt`` beside the model, else '0'..'n-1'; n must match."""
    names, where = card.get("class_names"), "model card"
    labels = Path(model_path).parent / "labels.txt"
    if not names and labels.is_file():
        names, where = [s for s in labels.read_text(encoding="utf-8").splitlines() if s.strip()], str(labels)
    if not names:
        return [str(i) for i in range(n)]
    if len(names) != n:
        raise PipelineError(f"{where} lists {len(names)} classes but {model_path} has {n} outputs")
    return [str(s) for s in names]


def _check_card(model: EdgeModel, model_path, card: dict) -> tuple[int, tuple, str]:
    """(channels, (h, w), resize policy) from the card, checked against the file itself."""
    h, w, c = model.image_shape
    spec = card.get("input", {})
    channels, size = int(spec.get("channels", c)), tuple(int(s) for s in spec.get("image_size", (h, w)))
    if (channels, size) != (c, (h, w)):
        raise PipelineError(f"model card says {[*size, channels]} input but {model_path} takes {[h, w, c]}")
    for entry in card.get("files", {}).values():
        if entry.get("file") == Path(model_path).name and "input" in entry:
            want = (float(entry["input"].get("scale", 0)), int(entry["input"].get("zero_point", 0)))
            if not np.isclose(want[0], model.input["scale"]) or want[1] != model.input["zero_point"]:
                raise PipelineError(f"model card quantization {want} differs from {model_path}'s own "
                                    f"{(model.input['scale'], model.input['zero_point'])}")
    return channels, size, spec.get("resize", "resize")


INPUT_WORDS = {"sequence": "sequence", "audio": "audio"}


def load_input(path, channels: int, size, policy: str = "resize", encoding: dict | None = None) -> np.ndarray:
    """One input file as the uint8 [H, W, C] the model takes, made as ingest made it: an image decoded and
    resized, a ``.npy`` sequence encoded (``encoding`` kind ``sequence``) or a ``.wav`` clip turned into its
    log-mel image (kind ``audio``), by the model card's ``input.encoding``."""
    kind = (encoding or {}).get("kind")
    if kind == "sequence":
        return load_npy(path, int(size[1]), channels, encoding)
    if kind == "audio":
        return load_features(path, encoding)
    return load_image(path, channels, size, policy)


def predict_each(model_path, image_paths, top_k: int = 3, card: dict | None = None,
                 num_threads: int | None = None):
    """Yield ``(path, top-k [(label, score)], None)`` per image file, each decoded and resized exactly as in
    training, or ``(path, None, one-line reason)`` for a file that cannot be read (missing, corrupt, a
    decompression bomb), so one bad file does not stop the others. A bad model or card raises at once.
    A detection model yields its objects instead of the top-k, a segmentation model its mask
    (:func:`task_decoder`)."""
    model = EdgeModel(model_path, num_threads)
    card = load_card(model_path) if card is None else card
    channels, size, policy = _check_card(model, model_path, card)
    decode = task_decoder(card, card.get("class_names", []))
    names = class_names(model_path, card, model.num_classes) if decode is None else None  # decode has them
    encoding = card.get("input", {}).get("encoding")
    kind = (encoding or {}).get("kind")
    for path in image_paths:
        try:
            image = load_input(path, channels, size, policy, encoding)
        except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, EOFError, ...
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            reason = (str(reason).strip().splitlines() or [type(exc).__name__])[0]
            yield path, None, f"{path}: cannot read {INPUT_WORDS.get(kind, 'image')} ({reason})"
            continue
        scores = model.predict(image[None])[0]
        if decode is not None:
            yield path, decode(scores), None
            continue
        best = np.argsort(-scores, kind="stable")[:max(1, top_k)]
        yield path, [(names[k], float(scores[k])) for k in best], None


def predict_files(model_path, image_paths, top_k: int = 3, card: dict | None = None,
                  num_threads: int | None = None) -> list[list[tuple[str, float]]]:
    """Top-k (label, score) per image file; the first unreadable file raises a one-line PipelineError."""
    results = []
    for _, result, error in predict_each(model_path, image_paths, top_k, card, num_threads):
        if error:
            raise PipelineError(error)
        results.append(result)
    return results


def bench(model_path, runs: int = 100, warmup: int = 10, num_threads: int | None = None,
          kernels: str = "default", no_amx: bool = False) -> dict:
    """Latency at batch 1 with LiteRT's ``kernels``: init, first inference, then mean / p50 / p99 over
    ``runs`` after ``warmup``. ``no_amx`` keeps XNNPACK off Intel AMX (:mod:`pipeline.amx`) for the rest of
    the process, so only a command in a process of its own passes it, before any interpreter was made."""
    if no_amx:
        deny()  # pipeline/amx.py: refuse AMX to this process
    t0 = time.perf_counter()
    model = EdgeModel(model_path, num_threads, kernels=kernels)
    init_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(0)
    x = model.quantize(rng.integers(0, 256, (1, *model.image_shape)).astype(np.uint8))
    t0 = time.perf_counter()
    model._run(x)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        model._run(x)
    times = np.empty(max(1, runs))
    for i in range(len(times)):
        t0 = time.perf_counter()
        model._run(x)
        times[i] = (time.perf_counter() - t0) * 1e3
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {"model": str(model.name), "threads": num_threads, "kernels": kernels, "no_amx": no_amx,
            "runs": len(times), "warmup": warmup, "input": model.input, "init_ms": r(init_ms),
            "first_ms": r(first_ms),
            "mean_ms": r(times.mean()), "p50_ms": r(np.percentile(times, 50)),
            "p99_ms": r(np.percentile(times, 99)), "min_ms": r(times.min()), "max_ms": r(times.max())}
