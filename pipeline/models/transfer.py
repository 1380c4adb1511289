"""Transfer learning: a trained base model (a ``.keras`` file or an earlier run's trained model) or a
``keras.applications`` backbone with a local weights file, under a new class layer; and the switch between the
two training phases (head with the base frozen, then fine-tuning from ``model.unfreeze_from``).

The reused part is one nested layer named ``base``, run in inference mode in both phases as Keras'
transfer-learning guide does with ``base(x, training=False)``. Keras 3 overrides that flag for a nested model
under ``fit`` (the outer ``training=True`` is passed on to every layer of the graph), so inference mode is
made structural: the base's dropout layers become identity layers (what dropout computes at inference), and
its batch-norm layers are never trainable (Keras 3: a non-trainable BatchNormalization uses its moving
statistics); when fine-tuning unfreezes the layers from ``model.unfreeze_from``, batch-norm layers stay
frozen, as the guide recommends, so a few small batches cannot wreck the statistics the base learned.

A trained base is cut before its dense head (the trailing dense / dropout / activation layers): the features
of its last hidden dense layer are specific to the base's classes (measured on digits 0-4 -> 5-9, a new class
layer on them reached 49-77% against 80-86% on the flattened convolution features; docs/models.md).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError

BACKBONES = ("mobilenet_v2", "mobilenet_v3_small")
BASE = "base"


def base_path(model_cfg, runs_root: Path | str = "runs") -> Path:
    """``model.base_model`` as a file: a ``.keras`` path, or the trained model of an earlier run."""
    name = model_cfg.base_model
    path = Path(name)
    if path.is_file():
        return path
    run_model = Path(runs_root) / name / "train" / "model.keras"
    if "/" not in name and not name.endswith(".keras") and run_model.is_file():
        return run_model
    if name.endswith(".keras") or "/" in name:
        raise ConfigError(f"model.base_model: {name}: no such file")
    raise ConfigError(f"model.base_model: {name}: neither a .keras file nor a trained run "
                      f"({run_model} not found; run `cnnpipe train --run {name}` first)")


def from_base(model_cfg, input_shape, num_classes: int, runs_root: Path | str = "runs"):
    """The base model up to its dense head (:func:`head_input`), in inference mode, frozen, under a new
    class layer with ``model.dropout`` in front of it (as the base's own class layer had)."""
    import keras

    from pipeline import models

    path = base_path(model_cfg, runs_root)
    keras.utils.set_random_seed(model_cfg.seed)
    base = models.load(path, compile=False)
    if tuple(base.input_shape[1:]) != tuple(input_shape):
        raise ConfigError(f"model.base_model: {path} takes input {tuple(base.input_shape[1:])}, "
                          f"the data is {tuple(input_shape)}; set data.image_size/data.channels to match")
    if not any(isinstance(layer, keras.layers.Dense) for layer in base.layers):
        raise ConfigError(f"model.base_model: {path} has no Dense layer to replace")
    features = keras.Model(base.input, head_input(base), name=BASE)
    return _with_head(inference_only(features), model_cfg, input_shape, num_classes, rescale=None,
                      dropout=model_cfg.dropout)


HEAD = ("Dense", "Dropout", "Activation", "Softmax", "ReLU")


def head_input(model):
    """The tensor the dense head of ``model`` starts from: the input of its trailing run of dense, dropout and
    activation layers (the flattened or pooled features of a CNN; the input of the last Dense layer when
    the head cannot be separated, e.g. a model of dense layers only)."""
    import keras

    layers = model.layers
    start = len(layers)
    while start > 1 and type(layers[start - 1]).__name__ in HEAD and _single_inbound(layers[start - 1]):
        start -= 1
    if start < len(layers) and not isinstance(layers[start - 1], keras.layers.InputLayer):
        return layers[start].input
    return [layer for layer in layers if isinstance(layer, keras.layers.Dense)][-1].input


def _single_inbound(layer) -> bool:
    return len(layer._inbound_nodes) == 1 and len(layer._inbound_nodes[0].input_tensors) == 1


def inference_only(features):
    """``features`` with each Dropout layer replaced by an identity layer of the same name (a copy with the
    same weights when there is any): the base computes what it computes at inference, whatever
    ``training`` flag Keras passes to it."""
    import keras

    if not any(isinstance(layer, keras.layers.Dropout) for layer in features.layers):
        return features

    def clone(layer):
        if isinstance(layer, keras.layers.Dropout):
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(features, clone_function=clone)
    copy.set_weights(features.get_weights())
    return copy


def backbone(model_cfg, input_shape, num_classes: int):
    """A keras.applications backbone (no top, global average pooling) with weights from a local file."""
    import keras

    weights = model_cfg.backbone_weights
    if not weights:
        raise ConfigError(f"model.backbone_weights: {model_cfg.backbone} needs a local weights file "
                          f"(.weights.h5, saved with model.save_weights); nothing is downloaded here")
    if not Path(weights).is_file():
        raise ConfigError(f"model.backbone_weights: {weights}: no such file; put the {model_cfg.backbone} "
                          f"weights (width {model_cfg.width}, include_top=False, a .weights.h5 file) there")
    keras.utils.set_random_seed(model_cfg.seed)
    features = make_backbone(model_cfg.backbone, input_shape, model_cfg.width)
    try:
        features.load_weights(weights)
    except Exception as exc:  # ValueError / OSError / KeyError from a file of another model or width
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(f"model.backbone_weights: {weights} does not fit {model_cfg.backbone} "
                          f"at width {model_cfg.width} and input {tuple(input_shape)} ({reason})") from None
    rescale = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")  # the backbones expect [-1, 1]
    return _with_head(features, model_cfg, input_shape, num_classes, rescale, model_cfg.dropout)


def make_backbone(name: str, input_shape, width: float):
    """A randomly initialized backbone without its top (what a local weights file is loaded into)."""
    import keras

    apps, shape = keras.applications, tuple(input_shape)
    try:
        if name == "mobilenet_v2":
            return apps.MobileNetV2(input_shape=shape, alpha=width, include_top=False, weights=None,
                                    pooling="avg", name=BASE)
        return apps.MobileNetV3Small(input_shape=shape, alpha=width, include_top=False, weights=None,
                                     pooling="avg", include_preprocessing=False, name=BASE)
    except ValueError as exc:
        reason = str(exc).splitlines()[0][:160]
        raise ConfigError(f"model.backbone: {name} at input {shape}: {reason}") from None


def _with_head(features, model_cfg, input_shape, num_classes, rescale, dropout: float):
    import keras

    features.trainable = not model_cfg.freeze_base
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = rescale(inputs) if rescale is not None else inputs
    x = features(x, training=False)  # as the guide; Keras 3 overrides it under fit, see the module docstring
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="cnnpipe_transfer")


def frozen_base(model):
    """The nested base layer when it is frozen (a transfer model before fine-tuning), else None."""
    try:
        base = model.get_layer(BASE)
    except ValueError:
        return None
    return base if not base.trainable else None


def unfreeze(model, unfreeze_from) -> int:
    """Make the base trainable from layer ``unfreeze_from`` (a name or an index into the base's layers; ""
    for all) on, batch-norm layers excepted; returns the number of base layers made trainable."""
    import keras

    base = model.get_layer(BASE)
    layers = base.layers
    start = 0
    if unfreeze_from not in ("", None):
        names = [layer.name for layer in layers]
        if isinstance(unfreeze_from, int) or str(unfreeze_from).lstrip("-").isdigit():
            start = int(unfreeze_from)
            if not -len(layers) <= start < len(layers):
                raise ConfigError(f"model.unfreeze_from: {start} is outside the base's {len(layers)} layers")
            start %= len(layers)
        elif unfreeze_from in names:
            start = names.index(unfreeze_from)
        else:
            raise ConfigError(f"model.unfreeze_from: {unfreeze_from!r} is not a layer of the base "
                              f"(first layers: {', '.join(names[:6])} ...)")
    base.trainable = True
    count = 0
    for i, layer in enumerate(layers):
        train = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = train
        count += bool(train and layer.weights)
    return count
