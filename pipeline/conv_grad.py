"""Faster training on the CPU: the gradients of a stride-1 ``Conv2D`` or ``Conv1D`` computed as forward
convolutions.

TensorFlow's CPU kernels for a convolution's gradients (``Conv2DBackpropInput``, ``Conv2DBackpropFilter``) are
far slower than its forward convolution at the small channel counts of edge models: in a profile of ResNet-8
training on Fashion-MNIST they took most of each step while the forward convolutions took under a tenth of it
(benchmarks/README.md, "Training speed"). Both gradients of a stride-1 convolution are convolutions
themselves, which run on the fast forward kernel:

* the input's gradient: the output's gradient, padded by ``k - 1`` minus the forward padding on each side,
  convolved (VALID) with the kernel turned 180 degrees and its input and output channels swapped;
* the kernel's gradient: the padded input with its batch and channel axes swapped (``[C_in, H, W, N]``)
  convolved (VALID) with the output's gradient as the kernel (``[H_out, W_out, N, C_out]``): a ``k x k``
  output, one value per tap, summed over the batch by the convolution itself.

:func:`install` points each eligible layer's ``convolution_op`` at a convolution with these gradients
(``tf.custom_gradient``). A ``Conv1D`` is the same convolution on a one-row image, as TensorFlow runs it
(``[N, 1, L, C]``, a ``[1, k]`` kernel); its ``call`` runs the convolution itself, so :func:`install` also
points it at ``BaseConv.call``, which goes through ``convolution_op`` and otherwise does the same (bias,
activation; :func:`conv1d` pads causal inputs as ``Conv1D.call`` does). The forward op is the one Keras runs,
so outputs do not change; gradients agree with TensorFlow's to float32 rounding. Only the training model's
instances change: the layer class, its config and the saved ``model.keras`` stay plain Keras, and evaluation
and export never see the difference.

``train.conv_backprop``: ``forward`` (these gradients), ``builtin`` (TensorFlow's kernels), ``auto``: forward
when no GPU is visible (cuDNN's gradient kernels are fast, and GPUs stay on them).
"""
from __future__ import annotations


def resolve(train_cfg) -> str:
    """``forward`` or ``builtin``: what ``train.conv_backprop`` means on this machine."""
    if train_cfg.conv_backprop != "auto":
        return train_cfg.conv_backprop
    from pipeline import strategy

    return "builtin" if strategy.gpus() else "forward"


def eligible(layer) -> bool:
    """A plain channels-last ``Conv2D`` or ``Conv1D`` with stride 1, no dilation and one group: what
    :func:`conv2d` and :func:`conv1d` compute."""
    import keras

    return (isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv1D))
            and layer.data_format == "channels_last" and set(layer.strides) == {1}
            and set(layer.dilation_rate) == {1} and layer.groups == 1)


def install(model, mode: str = "forward") -> int:
    """Give every eligible ``Conv2D`` and ``Conv1D`` of ``model`` (nested models included) the
    forward-convolution gradients when ``mode`` is ``forward``, or TensorFlow's own again when ``builtin``;
    returns how many layers it set."""
    import functools

    import keras

    layers = [layer for layer in _walk(model) if eligible(layer)]
    for layer in layers:
        if mode == "forward":
            layer.convolution_op = functools.partial(_convolution_op, layer)
            if isinstance(layer, keras.layers.Conv1D):  # its call skips convolution_op; BaseConv's uses it
                layer.call = super(keras.layers.Conv1D, layer).call
        else:
            for name in ("convolution_op", "call"):
                layer.__dict__.pop(name, None)  # the class's own method again
    return len(layers)


def _walk(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model: a transfer model's base
            yield from _walk(layer)


def _convolution_op(layer, inputs, kernel):
    import tensorflow as tf

    kernel = tf.convert_to_tensor(kernel)
    return (conv1d if kernel.shape.rank == 3 else conv2d)(inputs, kernel, layer.padding)


def _pads(size: int, padding: str) -> tuple[int, int]:
    """Before and after padding of one axis, as TensorFlow pads it for a stride-1 convolution."""
    if padding == "valid":
        return 0, 0
    return (size - 1) // 2, size - 1 - (size - 1) // 2  # "same": the odd pixel after, as TensorFlow does


def conv2d(x, kernel, padding: str = "same"):
    """``tf.nn.conv2d(x, kernel, 1, padding)`` (NHWC, a ``[kh, kw, C_in, C_out]`` kernel) whose gradients are
    forward convolutions (this module's docstring)."""
    import tensorflow as tf

    (top, bottom), (left, right) = (_pads(int(s), padding) for s in kernel.shape[:2])

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
            turned = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
            dx = tf.nn.conv2d(dy, turned, 1, [[0, 0], [kh - 1 - top, kh - 1 - bottom],
                                              [kw - 1 - left, kw - 1 - right], [0, 0]])
            dk = tf.nn.conv2d(tf.transpose(x, [3, 1, 2, 0]), tf.transpose(dy, [1, 2, 0, 3]), 1,
                              [[0, 0], [top, bottom], [left, right], [0, 0]])
            return dx, tf.transpose(dk, [1, 2, 0, 3])

        return tf.nn.conv2d(x, kernel, 1, padding.upper()), grad

    return conv(x, kernel)


def conv1d(x, kernel, padding: str = "same"):
    """``Conv1D``'s convolution (NLC, a ``[k, C_in, C_out]`` kernel, stride 1; ``padding`` same, valid or
    causal) with :func:`conv2d`'s gradients: the sequence as a one-row image, as ``tf.nn.conv1d`` runs it."""
    import tensorflow as tf

    if padding == "causal":  # as Conv1D.call: k - 1 zeros before the sequence, then a valid convolution
        x = tf.pad(x, [[0, 0], [int(kernel.shape[0]) - 1, 0], [0, 0]])
        padding = "valid"
    return conv2d(x[:, None], kernel[None], padding)[:, 0]
