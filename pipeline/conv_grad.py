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

Which is faster depends on the CPU: on AMD EPYC hosts with AVX2 these gradients made ResNet-8's training 1.28x
faster, while on an Intel Xeon with AVX-512 TensorFlow's own gradient kernels were 1.4x faster than them
(benchmarks/README.md, "Training speed"). So ``train.conv_backprop: auto`` times both on this machine, as
cuDNN's benchmark mode picks a GPU convolution's algorithm: :func:`fastest` runs one forward and backward pass
of each trainable layer's shape at the training batch size and in its compute dtype (``float32``, or
``bfloat16`` under ``train.mixed_precision: bfloat16``), a few times each way, and keeps the faster; a
layer gets these gradients only when they are at least 5% and 0.5 ms per step faster. The floor keeps small
layers, whose step of about a millisecond is mostly the cost of calling it, on TensorFlow's kernels: their
choice saves nothing, and a coin-flip choice would change the rounding, and so the trained weights, from one
run to the next. Decisions are kept per shape for the process, so a second model with the same layers is not
timed again. ``auto`` keeps TensorFlow's kernels on a GPU (cuDNN's gradient kernels are fast) and under
``train.deterministic`` (a timed choice could differ between two runs, and so would the rounding). ``forward``
and ``builtin`` force one kind on every layer.
"""
from __future__ import annotations

MARGIN = 0.95   # these gradients must take at most this share of TensorFlow's time to be chosen,
MIN_SAVING_S = 5e-4  # and save at least this much per training step
_FASTEST: dict = {}  # (input shape, kernel shape, padding, batch, dtype) -> "forward" | "builtin"


def resolve(train_cfg) -> str:
    """``forward``, ``builtin`` or ``fastest`` (timed per layer): what ``train.conv_backprop`` means on this
    machine."""
    if train_cfg.conv_backprop != "auto":
        return train_cfg.conv_backprop
    from pipeline import strategy

    return "builtin" if strategy.gpus() or train_cfg.deterministic else "fastest"


def eligible(layer) -> bool:
    """A plain channels-last ``Conv2D`` or ``Conv1D`` with stride 1, no dilation and one group: what
    :func:`conv2d` and :func:`conv1d` compute."""
    import keras

    return (isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv1D))
            and layer.data_format == "channels_last" and set(layer.strides) == {1}
            and set(layer.dilation_rate) == {1} and layer.groups == 1)


def install(model, mode: str = "forward", batch_size: int = 32) -> dict:
    """Give every eligible ``Conv2D`` and ``Conv1D`` of ``model`` (nested models included) the
    forward-convolution gradients when ``mode`` is ``forward``, TensorFlow's own again when ``builtin``, or
    whichever :func:`fastest` times as faster at ``batch_size`` when ``fastest``; returns what each layer got
    (:func:`installed`)."""
    import functools

    import keras

    for layer in _eligible(model):
        choice = fastest(layer, batch_size) if mode == "fastest" else mode
        if choice == "forward":
            layer.convolution_op = functools.partial(_convolution_op, layer)
            if isinstance(layer, keras.layers.Conv1D):  # its call skips convolution_op; BaseConv's uses it
                layer.call = super(keras.layers.Conv1D, layer).call
        else:
            for name in ("convolution_op", "call"):
                layer.__dict__.pop(name, None)  # the class's own method again
    return installed(model)


def installed(model) -> dict:
    """``{"forward": [layer names], "builtin": [layer names]}``: which gradients each eligible layer of
    ``model`` runs now."""
    got = {"forward": [], "builtin": []}
    for layer in _eligible(model):
        got["forward" if "convolution_op" in layer.__dict__ else "builtin"].append(layer.name)
    return got


def fastest(layer, batch_size: int, rounds: int = 5, budget_s: float = 1.0) -> str:
    """``forward`` when these gradients run a training step of ``layer`` (its convolution, then both
    gradients) at ``batch_size`` in at most ``MARGIN`` of the time TensorFlow's kernels take on this machine
    and at least ``MIN_SAVING_S`` less, else ``builtin``. Best of up to ``rounds`` alternating runs each,
    stopping after ``budget_s``; a frozen layer (no gradient to compute) or one of unknown input shape keeps
    TensorFlow's kernels untimed."""
    try:
        shape = tuple(layer.input.shape[1:])
    except (AttributeError, ValueError):  # a layer called more than once has no single input
        shape = (None,)
    if not layer.trainable or None in shape:
        return "builtin"
    key = (shape, tuple(layer.kernel.shape), layer.padding, int(batch_size), layer.compute_dtype)
    if key not in _FASTEST:
        _FASTEST[key] = _timed(*key, rounds=rounds, budget_s=budget_s)
    return _FASTEST[key]


def _timed(shape, kernel_shape, padding, batch_size, dtype, rounds, budget_s) -> str:
    import time

    import tensorflow as tf

    # in the layer's compute dtype: under mixed_bfloat16, oneDNN runs other kernels than in float32
    x = tf.cast(tf.random.stateless_normal([batch_size, *shape], seed=[0, 0]), dtype)
    kernel = tf.cast(tf.random.stateless_normal(kernel_shape, seed=[0, 1]), dtype)

    def step(conv):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = conv(x, kernel, padding)
            return tape.gradient(y, [x, kernel])
        return run

    runs = {"forward": step(_forward), "builtin": step(_builtin)}
    best = {name: float("inf") for name in runs}
    for run in runs.values():
        run()  # trace and warm up
    start = time.perf_counter()
    for _ in range(rounds):
        for name, run in runs.items():
            tick = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - tick)
        if time.perf_counter() - start > budget_s:
            break
    faster = best["forward"] <= MARGIN * best["builtin"] and best["builtin"] - best["forward"] >= MIN_SAVING_S
    return "forward" if faster else "builtin"


def _builtin(x, kernel, padding: str):
    """The convolution ``Conv1D`` or ``Conv2D`` runs, on TensorFlow's own gradient kernels."""
    import tensorflow as tf

    if kernel.shape.rank == 3:
        x, padding = _causal(x, kernel, padding)
        return tf.nn.conv1d(x, kernel, 1, padding.upper())
    return tf.nn.conv2d(x, kernel, 1, padding.upper())


def _eligible(model):
    return (layer for layer in _walk(model) if eligible(layer))


def _walk(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model: a transfer model's base
            yield from _walk(layer)


def _convolution_op(layer, inputs, kernel):
    import tensorflow as tf

    return _forward(inputs, tf.convert_to_tensor(kernel), layer.padding)


def _forward(x, kernel, padding: str):
    """The convolution ``Conv1D`` or ``Conv2D`` runs, with this module's gradients (:func:`_builtin`: with
    TensorFlow's)."""
    return (conv1d if kernel.shape.rank == 3 else conv2d)(x, kernel, padding)


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
    x, padding = _causal(x, kernel, padding)
    return conv2d(x[:, None], kernel[None], padding)[:, 0]


def _causal(x, kernel, padding: str):
    """``(x, padding)`` for a 1-D convolution, causal padding done as ``Conv1D.call`` does it: ``k - 1`` zeros
    before the sequence, then a valid convolution; other paddings unchanged."""
    import tensorflow as tf

    if padding != "causal":
        return x, padding
    return tf.pad(x, [[0, 0], [int(kernel.shape[0]) - 1, 0], [0, 0]]), "valid"
