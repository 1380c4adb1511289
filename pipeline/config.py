"""One config tree: dataclass defaults, one YAML file, dotted ``--set section.key=value`` overrides.

Every key carries a one-line help text and, where it has one, an allowed range or set of choices.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config_values import coerce as _coerce, type_name as _type_name
from pipeline.errors import ConfigError


FORMATS = ("float32", "float16", "dynamic", "int8", "int16x8")  # TFLite export modes
SEED_KEYS = ("data.seed", "model.seed", "train.seed")
SEED_MAX = 2**32 - 1  # numpy, TensorFlow and Keras take 32-bit seeds
SQUARE_KEYS = ("data.image_size",)  # a single number n means [n, n]


def opt(default, help: str, *, choices=None, min=None, max=None):
    """A dataclass field with help text and validation bounds."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    source: str = opt("digits", "digits | mnist5k | tfds:<name> | idx:<dir> | folder:<dir> | csv:<file> | "
                      "mnist1d | npz:<file> | ucr:<name> | audio:<dir> | yolo:<dir> (detect) | "
                      "masks:<dir> (segment) | scenes:detect|segment[,n=..,size=..,seed=..] (generated)")
    image_size: list = opt([], "[height, width] the images are resized to (a single number n means [n, n]); "
                           "[] keeps the source size")
    channels: int = opt(1, "1 (grayscale) or 3 (RGB); images are converted to this", choices=[1, 3])
    resize: str = opt("resize", "resize (stretch) or pad (keep aspect ratio, pad with black)",
                      choices=["resize", "pad"])
    val_fraction: float = opt(0.1, "share of the training pool held out for validation", min=0.01, max=0.5)
    test_fraction: float = opt(0.2, "share held out for test when the source has no test split",
                               min=0.01, max=0.5)
    use_source_splits: bool = opt(True, "keep the train/val/test splits the source defines")
    seed: int = opt(42, "seed of the stratified split", min=0)
    dedupe: bool = opt(False, "drop images from val/test whose exact content appears in an earlier split")
    tfds_dir: str = opt("", "TFDS data directory; empty uses TFDS' default (~/tensorflow_datasets)")
    fallback: str = opt("", "source used when the primary source is unavailable offline (e.g. idx:<dir>)")
    shard_size: int = opt(10000, "records per TFRecord shard written by ingest", min=100)
    workers: int = opt(0, "processes decoding image files at ingest; 0 = the CPU count", min=0, max=256)
    sequence_length: int = opt(0, "sequences (npz:, ucr:): length every sequence is brought to; 0 = the "
                               "longest in the source", min=0, max=1_000_000)
    sequence_fit: str = opt("pad", "sequences of another length: pad (zeros after the end, longer ones cut) "
                            "or resample (linear interpolation)", choices=["pad", "resample"])
    audio: dict = opt({}, "audio:<dir> log-mel front end {sample_rate, clip_seconds, window_ms, hop_ms, "
                      "mels, fmin, fmax}; unset keys keep their defaults (docs/sequences.md)")


@dataclass
class AugmentConfig:
    hflip: bool = opt(False, "random horizontal flip")
    vflip: bool = opt(False, "random vertical flip")
    rotation: float = opt(0.0, "max rotation as a fraction of a full turn (0.05 = +-18 degrees)",
                          min=0, max=0.5)
    zoom: float = opt(0.0, "max zoom in/out as a fraction of the size", min=0, max=0.9)
    translate: float = opt(0.0, "max shift as a fraction of height/width", min=0, max=0.5)
    contrast: float = opt(0.0, "max contrast change factor", min=0, max=1)
    brightness: float = opt(0.0, "max brightness change as a fraction of the pixel range", min=0, max=1)
    cutout: float = opt(0.0, "random erasing: side of the erased square as a fraction of the image",
                        min=0, max=1)
    mixup: float = opt(0.0, "mixup Beta(alpha, alpha) parameter; 0 disables", min=0, max=10)
    cutmix: float = opt(0.0, "cutmix Beta(alpha, alpha) parameter; 0 disables", min=0, max=10)
    time_shift: float = opt(0.0, "spectrograms: max shift along time (rows) as a fraction of the clip, "
                            "silence fills", min=0, max=0.5)
    noise: float = opt(0.0, "spectrograms: share of clips mixed with background noise (power added, "
                       "-80..-30 dB)", min=0, max=1)
    time_mask: int = opt(0, "spectrograms: SpecAugment mask of up to this many frames (rows)", min=0,
                         max=1000)
    freq_mask: int = opt(0, "spectrograms: SpecAugment mask of up to this many mel bands (columns)", min=0,
                         max=1000)


@dataclass
class ModelConfig:
    task: str = opt("classify", "classify (one label per image) | detect (object centres, FOMO-style) | "
                    "segment (a class per pixel, tiny U-Net); the data must hold the task's targets "
                    "(docs/tasks.md)",
                    choices=["classify", "detect", "segment"])
    preset: str = opt("small", "small (conv blocks below) | lenet5 | resnet8 | ds_cnn | mobilenet | conv1d "
                      "(sequences); cnnpipe build --show-spec prints it as model.layers",
                      choices=["small", "lenet5", "resnet8", "ds_cnn", "mobilenet", "conv1d", "mnist1d_cnn",
                               "fcn"])
    layers: list = opt([], "the layer spec: a list of blocks ({conv: {filters: 16}}, {bn: {}}, ...); "
                       "replaces the preset when given (docs/models.md)")
    filters: list = opt([32, 64], "filters of each conv block (small / conv1d presets)")
    kernel_size: int = opt(3, "convolution kernel size (small / conv1d)", min=1, max=15)
    strides: int = opt(1, "convolution stride (small / conv1d)", min=1, max=4)
    padding: str = opt("same", "convolution padding (small / conv1d)", choices=["same", "valid"])
    pool_size: int = opt(2, "max-pool size after each block, 1 disables (small / conv1d)", min=1, max=4)
    batch_norm: bool = opt(True, "batch normalization after each convolution (small / conv1d)")
    dropout: float = opt(0.25, "dropout before each dense layer (small / conv1d; backbone head)",
                         min=0, max=0.9)
    dense: list = opt([128], "units of the hidden dense layers of the head (small / conv1d)")
    width: float = opt(1.0, "width multiplier of the filters (mobilenet, ds_cnn, backbone)", min=0.05, max=4)
    initializer: str = opt("glorot_uniform", "initializer of conv and dense kernels",
                           choices=["glorot_uniform", "glorot_normal", "he_normal", "he_uniform",
                                    "lecun_normal", "lecun_uniform"])
    l2: float = opt(0.0, "L2 weight regularization of conv and dense kernels", min=0, max=1)
    budget: dict = opt({}, "device budget {flash_kb: N, ram_kb: N}: build stops when the estimated int8 "
                       "file / tensor arena exceeds it, export when the measured one does")
    base_model: str = opt("", "transfer learning: a trained .keras file or an earlier run name whose final "
                          "layer is replaced")
    backbone: str = opt("", "transfer learning: a keras.applications backbone (needs model.backbone_weights)",
                        choices=["", "mobilenet_v2", "mobilenet_v3_small"])
    backbone_weights: str = opt("", "local .weights.h5 file of the backbone (nothing is downloaded)")
    freeze_base: bool = opt(True, "transfer learning: train the new head with the base frozen first")
    unfreeze_from: str = field(default="", metadata={  # a layer name, or an index written as a number
        "help": "fine-tuning: unfreeze the base from this layer name or index ('' = all)",
        "choices": None, "min": None, "max": None, "int_ok": True})
    seed: int = opt(42, "seed of weight initialization", min=0)


@dataclass
class TrainConfig:
    epochs: int = opt(30, "maximum number of epochs", min=1, max=10000)
    batch_size: int = opt(64, "batch size", min=1, max=65536)
    optimizer: str = opt("adam", "adam, or sgd (SGD with Nesterov momentum)", choices=["adam", "sgd"])
    learning_rate: float = opt(0.003, "peak learning rate", min=1e-7, max=10)
    momentum: float = opt(0.9, "momentum of sgd", min=0, max=0.999)
    schedule: str = opt("cosine", "learning-rate schedule", choices=["cosine", "constant"])
    warmup_epochs: int = opt(1, "linear warm-up epochs before the schedule", min=0)
    weight_decay: float = opt(0.0, "decoupled weight decay (AdamW with adam when > 0)", min=0, max=1)
    finetune_epochs: int = opt(0, "transfer learning: epochs of fine-tuning after the head's train.epochs "
                               "(0: head only)", min=0, max=10000)
    finetune_lr: float = opt(0.0001, "transfer learning: peak learning rate of fine-tuning", min=1e-9, max=10)
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy", min=0, max=0.5)
    patience: int = opt(6, "early stopping: epochs without val-loss improvement", min=1)
    seed: int = opt(42, "seed of shuffling and augmentation", min=0)
    deterministic: bool = opt(False, "op determinism: byte-identical results on CPU (slower)")
    mixed_precision: str = opt("auto", "mixed_float16 on GPU when auto", choices=["auto", "on", "off"])
    conv_backprop: str = opt("auto", "gradients of stride-1 Conv2D layers: forward (as forward convolutions, "
                             "faster on the CPU) or builtin (TensorFlow's kernels); auto: forward without "
                             "a GPU",
                             choices=["auto", "forward", "builtin"])
    strategy: str = opt("auto", "distribution strategy: auto picks from GPUs and TF_CONFIG",
                        choices=["auto", "default", "mirrored", "multiworker"])
    cpu_devices: int = opt(0, "split the CPU into this many logical devices (tests of mirrored)",
                           min=0, max=16)
    verbose: int = opt(1, "0 silent, 1 progress bar (one line per epoch when output is not a terminal), "
                          "2 one line per epoch", choices=[0, 1, 2])
    time_budget_s: float = opt(0.0, "stop training after the epoch that spends this many seconds; "
                               "0 = no limit", min=0)
    cache: str = opt("auto", "keep decoded train/val in memory, in a disk file, or stream the shards; "
                     "auto: memory when they fit a quarter of the free memory",
                     choices=["auto", "memory", "disk", "none"])


@dataclass
class EvalConfig:
    batch_size: int = opt(256, "batch size of evaluation", min=1)


@dataclass
class ExportConfig:
    formats: list = opt(["float32", "int8"], "float32 | float16 | dynamic | int8 | int16x8")
    io_dtype: str = opt("int8", "input/output type of the int8 file", choices=["int8", "uint8"])
    representative_samples: int = opt(500, "training images used to calibrate quantization", min=1)
    max_accuracy_drop: float = opt(1.0, "gate: largest allowed accuracy loss of a quantized file, in points",
                                   min=0, max=100)
    max_class_drop: float = opt(5.0, "gate: largest allowed recall loss of any one class, in points",
                                min=0, max=100)
    max_metric_drop: float = opt(2.0, "gate (detect, segment): largest allowed loss of the task's metric "
                                 "(F1, mean IoU) by a quantized file, in points", min=0, max=100)
    golden_vectors: int = opt(8, "test inputs saved with their expected outputs for firmware tests", min=1)
    micro: bool = opt(True, "write the microcontroller bundle (C array, golden vectors, TFLM check)")
    dest: str = opt("exported", "folder the bundle is published under (<dest>/<run>/)")
    metadata: bool = opt(True, "embed TFLite metadata (labels, input normalization, image properties) in "
                               "each .tflite, as MediaPipe and TFLite Support read it")
    rgb_input: bool = opt(False, "give a grayscale model an RGB input (luminance computed inside the file), "
                                 "as camera frames arrive")


@dataclass
class DetectConfig:
    stride: int = opt(8, "detect: the output grid's cell size in input pixels (the backbone is cut where its "
                      "stride reaches this)", choices=[4, 8, 16])
    boxes: bool = opt(False, "detect: also regress a box per object (cell offset and size: 4 sigmoid "
                      "channels after the class scores, L1 loss on object cells)")
    object_weight: float = opt(10.0, "detect: loss weight of object cells against background cells (weighted "
                               "cross-entropy)", min=1, max=1000)
    threshold: float = opt(0.5, "detect: a cell is an object when its class probability reaches this",
                           min=0.01, max=0.99)
    match_distance: float = opt(8.0, "detect: a predicted centre matches a true one within this many pixels",
                                min=0.5, max=1000)


SECTIONS = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "export": ExportConfig,
    "detect": DetectConfig,
}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def section(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, name))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata) for f in dataclasses.fields(cls)}


def _check_lists(cfg: Config) -> None:
    """Checks of list values and of keys that depend on each other."""
    size = cfg.data.image_size
    if size and (len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                           for s in size)):
        raise ConfigError(f"data.image_size: expected [] or [height, width] of positive integers, "
                          f"got {size!r}")
    for key, values in (("model.filters", cfg.model.filters), ("model.dense", cfg.model.dense)):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise ConfigError(f"{key}: expected a list of positive integers, got {values!r}")
    if not cfg.model.filters and cfg.model.preset in ("small", "conv1d") and not cfg.model.layers:
        raise ConfigError("model.filters: needs at least one conv block")
    _check_model(cfg.model)
    if cfg.model.task != "classify":
        from pipeline import augment_targets

        augment_targets.check(cfg.augment, cfg.model.task)
    bad = [f for f in cfg.export.formats if f not in FORMATS]
    if bad or not cfg.export.formats:
        raise ConfigError(f"export.formats: {bad or '[]'} not in {', '.join(FORMATS)}")
    if not cfg.data.source.strip():
        raise ConfigError("data.source: must not be empty")
    _check_sources(cfg.data)
    for key in SEED_KEYS:
        section, name = key.split(".")
        seed = getattr(getattr(cfg, section), name)
        if seed > SEED_MAX:
            raise ConfigError(f"{key}: {seed} is above the maximum {SEED_MAX} (seeds are 32-bit)")
    if not cfg.export.dest.strip():
        raise ConfigError("export.dest: must not be empty (the folder bundles are published under, "
                          "e.g. exported)")


def _check_sources(data: DataConfig) -> None:
    """data.source and data.fallback name a known source kind with its argument, whichever stage runs."""
    from pipeline.sources import parse

    parse(data.source)
    if data.audio:
        from pipeline.sources.audio import settings

        settings(data.audio, "data.audio")
    if data.fallback.strip():
        try:
            parse(data.fallback)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("data.source:", "data.fallback:", 1)) from None


def _check_model(m: ModelConfig) -> None:
    """model.layers (names, keys, values of each block), model.budget and the transfer keys."""
    from pipeline.models import spec

    if m.layers:
        spec.normalize(m.layers, "model.layers")
    for key, value in m.budget.items():
        if key not in ("flash_kb", "ram_kb"):
            raise ConfigError(f"model.budget.{key}: unknown key (known: flash_kb, ram_kb)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(f"model.budget.{key}: expected a positive number of KB, got {value!r}")
    if m.base_model and m.backbone:
        raise ConfigError("model.backbone: set either model.base_model or model.backbone, not both")


PRESET_ONLY = ("preset", "filters", "kernel_size", "strides", "padding", "pool_size", "batch_norm", "dense",
               "width")


def _check_spec_only(given: set, layers: list) -> None:
    """A layer spec replaces the preset, so the preset's own keys beside it would be silently ignored: refuse
    the ``given`` ones: those a --set gives, and those of a file that holds a layer spec too. (A file written
    for a preset, such as configs/default.yaml, may list them: ``--set model.layers=...`` replaces it.)"""
    ignored = [f"model.{key}" for key in PRESET_ONLY if key in given]
    if layers and ignored:
        raise ConfigError(f"{', '.join(ignored)}: no effect when model.layers is given (the layer spec sets "
                          "every block itself): change model.layers, or build the preset instead with "
                          "--set model.layers=[]")


def from_dict(raw: dict | None) -> Config:
    """Build a validated :class:`Config` from a nested mapping (e.g. parsed YAML)."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    kwargs = {}
    for name, values in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(SECTIONS)})")
        values = values or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: expected a mapping of keys")
        fields = _fields(SECTIONS[name])
        clean = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"{name}.{key}: unknown key (known: {', '.join(fields)})")
            tp, meta = fields[key]
            if f"{name}.{key}" in SQUARE_KEYS and isinstance(value, int) and not isinstance(value, bool):
                value = [value, value]
            clean[key] = _coerce(f"{name}.{key}", value, tp, meta)
        kwargs[name] = SECTIONS[name](**clean)
    cfg = Config(**kwargs)
    _check_lists(cfg)
    return cfg


def parse_override(item: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected section.key=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {item}: expected section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if isinstance(value, dict):  # "folder:" or "tfds:mnist" parse as mappings; no key takes one
        value = text
    return parts, value


def load(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    file_model = raw.get("model")
    given = set(file_model) if isinstance(file_model, dict) and file_model.get("layers") else set()
    for item in overrides:
        (section, key), value = parse_override(item)
        if section == "model":
            given.add(key)
        if raw.get(section) is None:
            raw[section] = {}
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{section}: expected a mapping of keys")
        raw[section][key] = value
    cfg = from_dict(raw)
    _check_spec_only(given, cfg.model.layers)
    return cfg


def describe() -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every config key, for docs and ``cnnpipe config``."""
    rows = []
    defaults = Config()
    for name, cls in SECTIONS.items():
        for key, (tp, meta) in _fields(cls).items():
            default = getattr(getattr(defaults, name), key)
            extra = ""
            if meta.get("choices"):
                extra = f" (one of {', '.join(map(str, meta['choices']))})"
            rows.append((f"{name}.{key}", _type_name(tp), repr(default), meta["help"] + extra))
    return rows
