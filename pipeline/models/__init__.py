"""CNN models in the vocabulary CNNs are taught in.

``spec``      the layer spec (``model.layers``): blocks -> checked shapes -> Keras
``presets``   small, lenet5, resnet8, ds_cnn, mobilenet, conv1d, written in the spec
``summary``   per-layer shapes, parameters, MACs, receptive field; int8 size, activation memory, budgets
``transfer``  a trained base model or a keras.applications backbone under a new class layer; fine-tuning

Every model takes raw pixels (float32 in [0, 255]) and rescales them itself, so the exported file needs no
preprocessing but decoding and resizing. The last layer is a float32 softmax. Nothing here imports TensorFlow
until a model is built or loaded.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError, PipelineError
from pipeline.models import presets, spec, summary


def resolved_spec(model_cfg, input_shape) -> list:
    """The normalized blocks of ``model.*`` for this input (``model.layers`` or the preset)."""
    where = "model.layers" if model_cfg.layers else f"model.preset {model_cfg.preset}: layer"
    return spec.normalize(presets.layers(model_cfg, input_shape), where)


def plan(model_cfg, input_shape, num_classes: int, stride: int = 8, boxes: bool = False) -> list:
    """The checked plan of the model (no TensorFlow): one :class:`spec.Op` per Keras layer. ``num_classes``
    counts the object classes of a detection model (its output adds a background score)."""
    where = "model.layers" if model_cfg.layers else f"model.preset {model_cfg.preset}: layer"
    blocks = resolved_spec(model_cfg, input_shape)
    try:
        return spec.plan(blocks, input_shape, num_classes, where, model_cfg.initializer, model_cfg.l2,
                         task=model_cfg.task, stride=stride, from_preset=not model_cfg.layers, boxes=boxes)
    except ConfigError as exc:
        text = str(exc)
        if model_cfg.layers or not any(k in text for k in ("larger than its input", "reaches zero")):
            raise
        size = "x".join(map(str, input_shape[:-1]))  # a preset's shapes follow from the image size alone
        raise ConfigError(f"data.image_size: {size} is too small for the model's pooling and kernels "
                          f"({text}); use larger images or fewer blocks") from None


def spec_name(model_cfg) -> str:
    """What the model is written in: ``layers`` (``model.layers``) or the name of its preset."""
    return "layers" if model_cfg.layers else model_cfg.preset


def spec_key(model_cfg) -> str:
    """The config key the model comes from, for messages: ``model.layers`` or ``model.preset <name>``."""
    return "model.layers" if model_cfg.layers else f"model.preset {model_cfg.preset}"


def is_transfer(model_cfg) -> bool:
    return bool(model_cfg.base_model or model_cfg.backbone)


def build(model_cfg, input_shape, num_classes: int, runs_root: Path | str = "runs", stride: int = 8,
          boxes: bool = False):
    """Build an untrained model for ``input_shape`` = (H, W, C) raw pixels and ``num_classes`` classes.

    The spec is checked and the model's size compared with this machine's memory before Keras builds it."""
    import keras

    from pipeline.models import transfer

    if model_cfg.task != "classify" and is_transfer(model_cfg):
        raise ConfigError(f"model.task {model_cfg.task}: transfer learning (model.base_model, "
                          "model.backbone) replaces a class layer; build a detection or segmentation model "
                          "from model.layers")
    if model_cfg.base_model:
        return transfer.from_base(model_cfg, input_shape, num_classes, runs_root)
    if model_cfg.backbone:
        return transfer.backbone(model_cfg, input_shape, num_classes)
    ops = plan(model_cfg, input_shape, num_classes, stride, boxes)
    summary.check_memory(summary.estimate(ops), spec_key(model_cfg))
    keras.utils.set_random_seed(model_cfg.seed)
    name = f"cnnpipe_{spec_name(model_cfg)}"
    return spec.to_keras(ops, name, model_cfg.initializer, model_cfg.l2)


def load(path: str | Path, compile: bool = True):
    """Load a ``.keras`` file with ``safe_mode`` (no arbitrary code); a broken file is a one-line error."""
    import zipfile

    import keras

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{path}: not a readable .keras model "
                            f"(not a zip archive: truncated or another format)")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ... from a corrupt or foreign file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{path}: not a readable .keras model ({reason[:160]})") from None


def param_count(model) -> int:
    return int(model.count_params())
