"""The presets, written in the layer spec (:mod:`pipeline.models.spec`), so ``cnnpipe build --show-spec``
prints one as YAML a user can paste into ``model.layers`` and edit.
The class layer is appended by the builder.

``small`` and ``conv1d`` are described by the ``model.filters / kernel_size / strides / padding / pool_size /
batch_norm / dropout / dense`` keys; the others are fixed as published (``mobilenet`` and ``ds_cnn`` scale
their filters by ``model.width``).
"""
from __future__ import annotations

NAMES = ("small", "lenet5", "resnet8", "ds_cnn", "mobilenet", "conv1d", "mnist1d_cnn", "fcn")
FLATTEN_MAX = 8  # small: flatten a feature map up to 8x8, global-average-pool a larger one


def _head(m) -> list:
    """The head of small / conv1d: dropout before each hidden dense layer and before the class layer."""
    out = []
    for units in m.dense:
        out += [{"dropout": m.dropout}, {"dense": {"units": units, "activation": "relu"}}]
    return out + [{"dropout": m.dropout}]


def small(m, input_shape) -> list:
    """One conv -> batch-norm -> ReLU -> max-pool block per entry of model.filters, then the head.

    The feature map is flattened while it is at most 8x8 (the digits and Fashion-MNIST defaults: every
    position keeps its own weights, which small images need); a larger one is averaged by global pooling, so
    the dense layer does not grow with the image (at 224x224 flatten would give ~25 M parameters)."""
    blocks = []
    size = list(input_shape[:2])
    for f in m.filters:
        blocks.append({"conv": {"filters": f, "kernel": m.kernel_size, "stride": m.strides,
                                "padding": m.padding, "bias": not m.batch_norm}})
        if m.batch_norm:
            blocks.append({"bn": {}})
        blocks.append({"relu": {}})
        size = [-(-s // m.strides) if m.padding == "same" else max(0, (s - m.kernel_size) // m.strides + 1)
                for s in size]
        if m.pool_size > 1:
            blocks.append({"pool": {"type": "max", "size": m.pool_size}})
            size = [s // m.pool_size for s in size]
    big = max(size) > FLATTEN_MAX
    blocks.append({"global_pool": {"type": "avg"}} if big else {"flatten": {}})
    return blocks + _head(m)


def conv1d(m, input_shape) -> list:
    """1-D convolutions over a sequence stored as a one-row image [1, length, channels]."""
    blocks = []
    for f in m.filters:
        blocks.append({"conv1d": {"filters": f, "kernel": m.kernel_size, "stride": m.strides,
                                  "padding": m.padding, "bias": not m.batch_norm}})
        if m.batch_norm:
            blocks.append({"bn": {}})
        blocks.append({"relu": {}})
        if m.pool_size > 1:
            blocks.append({"pool": {"type": "max", "size": m.pool_size}})
    return blocks + [{"global_pool": {"type": "avg"}}] + _head(m)


def lenet5(m, input_shape) -> list:
    """LeNet-5 (LeCun et al. 1998) with ReLU: conv 6@5x5 -> avg-pool -> conv 16@5x5 -> avg-pool
    -> 120 -> 84."""
    return [
        {"conv": {"filters": 6, "kernel": 5, "padding": "same"}}, {"relu": {}},
        {"pool": {"type": "avg", "size": 2}},
        {"conv": {"filters": 16, "kernel": 5, "padding": "valid"}}, {"relu": {}},
        {"pool": {"type": "avg", "size": 2}},
        {"flatten": {}},
        {"dense": {"units": 120, "activation": "relu"}},
        {"dense": {"units": 84, "activation": "relu"}},
    ]


def _res_stage(filters: int, stride: int) -> dict:
    return {"residual": [
        {"conv": {"filters": filters, "kernel": 3, "stride": stride}}, {"bn": {}}, {"relu": {}},
        {"conv": {"filters": filters, "kernel": 3}}, {"bn": {}},
    ]}


def resnet8(m, input_shape) -> list:
    """ResNet-8 as the MLPerf Tiny image-classification reference builds it (resnet_v1_eembc): a 16-filter
    stem, three residual stages of 16, 32, 64 filters (stride 1, 2, 2; a 1x1 projection where the shape
    changes), global average pooling. 78,666 parameters at 32x32x3 with 10 classes."""
    blocks = [{"conv": {"filters": 16, "kernel": 3}}, {"bn": {}}, {"relu": {}}]
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        blocks += [_res_stage(filters, stride), {"relu": {}}]
    return blocks + [{"global_pool": {"type": "avg"}}]


def _scaled(filters: int, width: float) -> int:
    return max(1, int(filters * width))


def ds_cnn(m, input_shape) -> list:
    """The MLPerf Tiny keyword-spotting DS-CNN (49x10 MFCC input): a 10x4 stride-2 convolution, four
    depthwise-separable blocks of 64 filters, global average pooling.
    About 24.9 K parameters for 12 classes."""
    f = _scaled(64, m.width)
    blocks = [{"conv": {"filters": f, "kernel": [10, 4], "stride": 2}}, {"bn": {}}, {"relu": {}},
              {"dropout": 0.2}]
    for _ in range(4):
        blocks += [{"depthwise_conv": {"kernel": 3}}, {"bn": {}}, {"relu": {}},
                   {"conv": {"filters": f, "kernel": 1}}, {"bn": {}}, {"relu": {}}]
    return blocks + [{"dropout": 0.4}, {"global_pool": {"type": "avg"}}]


def mnist1d_cnn(m, input_shape) -> list:
    """The CNN of the MNIST-1D paper (Greydanus 2020): three 1-D convolutions of 25 filters (kernel 5, 3, 3,
    stride 2 each) with ReLU, flattened into the class layer; 5,210 parameters at length 40 with 10 classes.
    With ``model.batch_norm`` (default) each convolution is followed by batch normalization (folded into the
    convolution in the int8 file): the paper trains on standardized sequences, and without normalization the
    uint8 encoding (q / 255, standard deviation near 0.1) trains far worse. ``model.width`` scales the
    filters."""
    f = _scaled(25, m.width)
    blocks = []
    for kernel in (5, 3, 3):
        blocks.append({"conv1d": {"filters": f, "kernel": kernel, "stride": 2, "bias": not m.batch_norm}})
        blocks += [{"bn": {}}, {"relu": {}}] if m.batch_norm else [{"relu": {}}]
    return blocks + [{"flatten": {}}]


def fcn(m, input_shape) -> list:
    """The fully convolutional network for time series (Wang, Yan & Oates 2017; the FCN of Fawaz et al.'s
    UCR benchmark): 1-D convolutions of 128, 256, 128 filters (kernel 8, 5, 3), each with batch normalization
    and ReLU, then global average pooling. ``model.width`` scales the filters."""
    blocks = []
    for filters, kernel in ((128, 8), (256, 5), (128, 3)):
        blocks += [{"conv1d": {"filters": _scaled(filters, m.width), "kernel": kernel}}, {"bn": {}},
                   {"relu": {}}]
    return blocks + [{"global_pool": {"type": "avg"}}]


MOBILENET = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
             (512, 1), (512, 1), (1024, 2), (1024, 1)]


def mobilenet(m, input_shape) -> list:
    """MobileNetV1 (Howard et al. 2017) with width multiplier model.width: a 32-filter stride-2 stem, 13
    depthwise-separable blocks (depthwise 3x3 -> BN -> ReLU6 -> pointwise 1x1 -> BN -> ReLU6), global
    average pooling. Made for 96x96 to 224x224 RGB; at width 0.25 and 96x96 it is the MLPerf Tiny
    visual-wake-words model."""
    blocks = [{"conv": {"filters": _scaled(32, m.width), "kernel": 3, "stride": 2, "bias": False}},
              {"bn": {}}, {"relu6": {}}]
    for filters, stride in MOBILENET:
        blocks += [{"depthwise_conv": {"kernel": 3, "stride": stride, "bias": False}}, {"bn": {}},
                   {"relu6": {}},
                   {"conv": {"filters": _scaled(filters, m.width), "kernel": 1, "bias": False}}, {"bn": {}},
                   {"relu6": {}}]
    return blocks + [{"global_pool": {"type": "avg"}}, {"dropout": 0.001}]


PRESETS = {"small": small, "lenet5": lenet5, "resnet8": resnet8, "ds_cnn": ds_cnn, "mobilenet": mobilenet,
           "conv1d": conv1d, "mnist1d_cnn": mnist1d_cnn, "fcn": fcn}
USUAL_INPUT = {"small": (8, 8, 1), "lenet5": (28, 28, 1), "resnet8": (32, 32, 3), "ds_cnn": (49, 10, 1),
               "mobilenet": (96, 96, 3), "conv1d": (1, 128, 1), "mnist1d_cnn": (1, 40, 1), "fcn": (1, 150, 1)}


def layers(m, input_shape) -> list:
    """The spec of ``model.*``: ``model.layers`` when given, else the preset's."""
    if m.layers:
        return list(m.layers)
    return PRESETS[m.preset](m, tuple(input_shape))
