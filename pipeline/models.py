"""CNN builders in the vocabulary CNNs are taught in: convolution filters with kernel size, stride and padding,
batch normalization, ReLU, pooling, dropout and dense layers. Presets: ``small``, ``lenet5``, ``resnet8``,
``conv1d`` (sequences), and transfer learning by replacing the final layer of a trained model.

Every model takes raw pixels (float32 in [0, 255]) and rescales them itself, so the exported file needs no
preprocessing but decoding and resizing. The last layer is a float32 softmax.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError, PipelineError


def _layers():
    import keras
    return keras.layers


def _check_pool(size: list[int], pool: int, where: str, image: list[int]) -> list[int]:
    """Spatial size after a pooling step; an image too small for the model's pooling is a config error."""
    if any(s < pool for s in size):
        raise ConfigError(f"data.image_size: {image[0]}x{image[1]} is too small for the model's pooling "
                          f"({where} gets {size[0]}x{size[1]}); use larger images or fewer blocks")
    return [s // pool for s in size]


def _conv_out(size: list[int], m, image: list[int]) -> list[int]:
    """Spatial size after a convolution with model.kernel_size / strides / padding."""
    out = [-(-s // m.strides) if m.padding == "same" else (s - m.kernel_size) // m.strides + 1 for s in size]
    if min(out) < 1:
        raise ConfigError(f"data.image_size: {'x'.join(map(str, image))} is too small for "
                          f"model.kernel_size {m.kernel_size} / strides {m.strides} with padding {m.padding}")
    return out


def _conv_block(x, filters, m, name):
    L = _layers()
    x = L.Conv2D(filters, m.kernel_size, strides=m.strides, padding=m.padding, use_bias=not m.batch_norm,
                 name=f"{name}_conv")(x)
    if m.batch_norm:
        x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def _head(x, m, num_classes):
    L = _layers()
    for i, units in enumerate(m.dense):
        x = L.Dropout(m.dropout, name=f"head_dropout{i}")(x)
        x = L.Dense(units, name=f"head_dense{i}")(x)
        x = L.ReLU(name=f"head_relu{i}")(x)
    x = L.Dropout(m.dropout, name="head_dropout")(x)
    x = L.Dense(num_classes, name="logits")(x)
    return L.Activation("softmax", dtype="float32", name="probs")(x)


def _small(x, m, size):
    L = _layers()
    image = list(size)
    for i, filters in enumerate(m.filters):
        size = _conv_out(size, m, image)
        x = _conv_block(x, filters, m, f"block{i}")
        if m.pool_size > 1:
            size = _check_pool(size, m.pool_size, f"block {i}", image)
            x = L.MaxPooling2D(m.pool_size, name=f"block{i}_pool")(x)
    return L.Flatten(name="flatten")(x)


def _lenet5(x, m, size):
    """LeNet-5 (LeCun et al. 1998) with ReLU: conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> 120 -> 84."""
    L = _layers()
    if any(s < 12 for s in size):
        raise ConfigError(f"data.image_size: lenet5 needs images of at least 12x12, got {size[0]}x{size[1]}")
    x = L.Conv2D(6, 5, padding="same", name="c1")(x)
    x = L.ReLU(name="c1_relu")(x)
    x = L.AveragePooling2D(2, name="s2")(x)
    x = L.Conv2D(16, 5, padding="valid", name="c3")(x)
    x = L.ReLU(name="c3_relu")(x)
    x = L.AveragePooling2D(2, name="s4")(x)
    x = L.Flatten(name="flatten")(x)
    for units, name in ((120, "c5"), (84, "f6")):
        x = L.Dense(units, name=name)(x)
        x = L.ReLU(name=f"{name}_relu")(x)
    return x


def _resnet8(x, m, size):
    """A ResNet with three residual stages (16, 32, 64 filters), as in the MLPerf Tiny image benchmark."""
    L = _layers()
    image = list(size)
    x = _conv_block(x, 16, m, "stem")
    for i, filters in enumerate((16, 32, 64)):
        stride = 1 if i == 0 else 2
        if stride > 1:
            size = _check_pool(size, 2, f"stage {i}", image)
        y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"res{i}_conv1")(x)
        y = L.BatchNormalization(momentum=0.9, name=f"res{i}_bn1")(y)
        y = L.ReLU(name=f"res{i}_relu1")(y)
        y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"res{i}_conv2")(y)
        y = L.BatchNormalization(momentum=0.9, name=f"res{i}_bn2")(y)
        if stride > 1 or x.shape[-1] != filters:
            x = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"res{i}_proj")(x)
        x = L.ReLU(name=f"res{i}_out")(L.Add(name=f"res{i}_add")([x, y]))
    return L.GlobalAveragePooling2D(name="gap")(x)


def _conv1d(x, m, size):
    """1-D convolutions over a sequence stored as a one-row image [1, length, channels]."""
    L = _layers()
    if size[0] != 1:
        raise ConfigError(f"model.preset: conv1d expects sequences shaped [1, length], got {size}")
    length, channels = size[1], x.shape[-1]
    x = L.Reshape((length, channels), name="to_sequence")(x)
    for i, filters in enumerate(m.filters):
        length = _conv_out([length], m, [length])[0]
        x = L.Conv1D(filters, m.kernel_size, strides=m.strides, padding=m.padding, name=f"block{i}_conv")(x)
        if m.batch_norm:
            x = L.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = L.ReLU(name=f"block{i}_relu")(x)
        if m.pool_size > 1:
            length = length // m.pool_size
            if length < 1:
                raise ConfigError("model.filters: too many pooling blocks for the sequence length")
            x = L.MaxPooling1D(m.pool_size, name=f"block{i}_pool")(x)
    return L.GlobalAveragePooling1D(name="gap")(x)


PRESETS = {"small": _small, "lenet5": _lenet5, "resnet8": _resnet8, "conv1d": _conv1d}


def build(model_cfg, input_shape, num_classes: int):
    """Build an untrained model for ``input_shape`` = (H, W, C) raw pixels and ``num_classes`` classes."""
    import keras

    if model_cfg.base_model:
        return transfer(model_cfg, input_shape, num_classes)
    keras.utils.set_random_seed(model_cfg.seed)
    L = _layers()
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = L.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    features = PRESETS[model_cfg.preset](x, model_cfg, list(input_shape[:2]))
    outputs = _head(features, model_cfg, num_classes)
    return keras.Model(inputs, outputs, name=f"cnnpipe_{model_cfg.preset}")


def load(path: str | Path, compile: bool = True):
    """Load a ``.keras`` file with ``safe_mode`` (no arbitrary code); a broken file is a one-line error."""
    import keras

    import zipfile

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{path}: not a readable .keras model (not a zip archive: truncated or another format)")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ... from a corrupt or foreign file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{path}: not a readable .keras model ({reason[:160]})") from None


def transfer(model_cfg, input_shape, num_classes: int):
    """Transfer learning: reuse a trained model up to its final Dense layer and put a new one on top."""
    import keras

    keras.utils.set_random_seed(model_cfg.seed)
    if not Path(model_cfg.base_model).is_file():
        raise ConfigError(f"model.base_model: {model_cfg.base_model}: no such file")
    base = load(model_cfg.base_model, compile=False)
    if tuple(base.input_shape[1:]) != tuple(input_shape):
        raise ConfigError(f"model.base_model: {model_cfg.base_model} takes input {base.input_shape[1:]}, "
                          f"the data is {tuple(input_shape)}; set data.image_size/data.channels to match")
    dense = [layer for layer in base.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ConfigError(f"model.base_model: {model_cfg.base_model} has no Dense layer to replace")
    features = keras.Model(base.input, dense[-1].input, name="base")
    features.trainable = not model_cfg.freeze_base
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = features(inputs, training=False) if model_cfg.freeze_base else features(inputs)
    x = keras.layers.Dense(num_classes, name="new_logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="cnnpipe_transfer")


def param_count(model) -> int:
    return int(model.count_params())
