"""The config tree's schema: one dataclass per section, each key with its default, a one-line help text and,
where it has one, an allowed range or set of choices. Loading, overrides and checks are in
:mod:`pipeline.config`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


FORMATS = ("float32", "float16", "dynamic", "int8", "int16x8")  # TFLite export modes


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
    mixed_precision: str = opt("auto", "on: mixed_float16; bfloat16: mixed_bfloat16 (CPUs with AMX or "
                               "AVX-512 BF16); off: float32; auto: mixed_float16 on a GPU, else float32",
                               choices=["auto", "on", "bfloat16", "off"])
    conv_backprop: str = opt("auto", "gradients of stride-1 Conv2D and Conv1D layers: forward (as forward "
                             "convolutions) or builtin (TensorFlow's kernels); auto: each layer's faster "
                             "one, timed on this machine (builtin on a GPU and when deterministic)",
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
    flip_average: bool = opt(False, "classifiers of images: each file also runs the model on the mirror "
                                    "image (left-right) and returns the mean of the two outputs (test-time "
                                    "augmentation: the same weights, twice the MACs and latency)")


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
