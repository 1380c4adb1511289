"""Where training runs: devices, determinism, precision and the ``tf.distribute`` strategy.

``train.strategy``:

* ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` is set, MirroredStrategy when more than one GPU is
  visible, else the default strategy (one GPU or the CPU);
* ``default`` / ``mirrored`` / ``multiworker``: that one.

``train.cpu_devices: N`` splits the CPU into N logical devices, so MirroredStrategy can be tried without GPUs.
``train.mixed_precision: auto`` trains in ``mixed_float16`` only when a GPU is present; ``on`` forces it;
``bfloat16`` trains in ``mixed_bfloat16`` (no loss scaling; fast where oneDNN has AMX or AVX-512 BF16).
In multi-worker mode the task named ``chief`` (or worker 0 when the cluster has no chief) is the chief:
it alone writes the run's files.

:func:`configure` must run before TensorFlow initializes its devices (before the first op), so ``cnnpipe
train`` calls it first thing; :func:`make` then builds the strategy once per process.
"""
from __future__ import annotations

import contextlib
import json
import os

from pipeline.errors import ConfigError, PipelineError

_STRATEGIES: dict = {}


# ---------------------------------------------------------------- cluster (TF_CONFIG), no TensorFlow needed

def tf_config() -> dict | None:
    """The parsed ``TF_CONFIG`` environment variable, or None when it is unset or empty."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"TF_CONFIG: not valid JSON ({exc})") from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict):
        raise ConfigError('TF_CONFIG: expected {"cluster": {"worker": ["host:port", ...]}, '
                          '"task": {"type": "worker", "index": 0}}')
    return value


def resolve(train_cfg) -> str:
    """``default``, ``mirrored`` or ``multiworker``: what ``train.strategy`` means on this machine."""
    if train_cfg.strategy != "auto":
        if train_cfg.strategy == "multiworker" and tf_config() is None:
            raise ConfigError("train.strategy: multiworker needs the TF_CONFIG environment variable "
                              "(cluster and task; see docs/distributed.md)")
        return train_cfg.strategy
    if tf_config() is not None:
        return "multiworker"
    return "mirrored" if len(gpus()) > 1 else "default"


def is_chief(train_cfg) -> bool:
    """False only for a multi-worker task that is not the chief (those write nothing under the run)."""
    conf = tf_config()
    if conf is None or train_cfg.strategy in ("default", "mirrored"):
        return True
    task = conf.get("task") or {}
    if not isinstance(task, dict) or not isinstance(task.get("index", 0), int):
        raise ConfigError('TF_CONFIG: "task" must be like {"type": "worker", "index": 0}')
    kind, index = task.get("type", "worker"), task.get("index", 0)
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in conf["cluster"]


# ---------------------------------------------------------------- devices, determinism, precision

def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def configure(train_cfg) -> None:
    """Split the CPU, let GPU memory grow, seed everything and switch on op determinism when asked.

    Call before TensorFlow runs its first op. The logical CPU split cannot be changed afterwards: when the
    process already initialized TensorFlow with another layout, that is a one-line error.
    """
    import keras
    import tensorflow as tf

    if train_cfg.cpu_devices:
        _split_cpu(tf, train_cfg.cpu_devices)
    for gpu in gpus():
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialized: keep what was set
            pass
    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def _split_cpu(tf, n: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise PipelineError(f"train.cpu_devices: TensorFlow already started with {have} CPU device(s) "
                                "in this process; run `cnnpipe train` on its own (after ingest and build)"
                                ) from None


def precision(train_cfg) -> str:
    """The Keras dtype policy training uses: ``mixed_float16``, ``mixed_bfloat16`` or ``float32``."""
    if train_cfg.mixed_precision == "bfloat16":
        return "mixed_bfloat16"
    if train_cfg.mixed_precision == "on" or (train_cfg.mixed_precision == "auto" and gpus()):
        return "mixed_float16"
    return "float32"


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Keras' global dtype policy set to ``policy`` inside the block (models built there compute in it), and
    put back afterwards: the rest of the process stays as it was."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ---------------------------------------------------------------- strategies

def make(train_cfg):
    """The ``tf.distribute.Strategy`` for ``train.strategy``; one per process and kind."""
    import tensorflow as tf

    name = resolve(train_cfg)
    if name not in _STRATEGIES:
        if name == "multiworker":
            try:
                strategy = tf.distribute.MultiWorkerMirroredStrategy()
            except (RuntimeError, ValueError) as exc:
                raise PipelineError(f"train.strategy: cannot start MultiWorkerMirroredStrategy ({exc}); "
                                    "run `cnnpipe train` in its own process with TF_CONFIG set") from None
            _patch_keras_multiworker()
        elif name == "mirrored":
            found = gpus()
            devices = None if found else [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(devices)
        else:
            strategy = tf.distribute.get_strategy()
        _STRATEGIES[name] = strategy
    return _STRATEGIES[name]


def prepare(train_cfg):
    """:func:`configure` then :func:`make`: for a command to call at startup, before any other stage has
    started TensorFlow (the CPU split and MultiWorkerMirroredStrategy can only be set up then)."""
    configure(train_cfg)
    return make(train_cfg)


def is_multiworker(strategy) -> bool:
    import tensorflow as tf

    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def describe(strategy, train_cfg) -> dict:
    """What the manifest records about where training ran."""
    import tensorflow as tf

    try:
        devices = list(strategy.extended.worker_devices)
    except (AttributeError, RuntimeError, NotImplementedError):  # the default strategy: one device
        devices = [(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name]
    info = {"strategy": resolve(train_cfg), "class": type(strategy).__name__,
            "replicas": int(strategy.num_replicas_in_sync), "devices": devices,
            "gpus": [d.name for d in gpus()], "global_batch_size": train_cfg.batch_size,
            "precision": precision(train_cfg)}
    if is_multiworker(strategy):
        conf = tf_config()
        info["workers"] = len(conf["cluster"].get("worker", [])) + len(conf["cluster"].get("chief", []))
        info["task"] = conf.get("task", {})
    return info


def shard(ds, strategy):
    """Multi-worker: every worker reads all files and keeps its share of the elements (DATA sharding)."""
    if not is_multiworker(strategy):
        return ds
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def same_on_all_workers(strategy, value: int) -> bool:
    """True when every worker passes the same ``value`` (an all-reduce of value and value squared)."""
    if not is_multiworker(strategy):
        return True
    import tensorflow as tf

    local = tf.constant([float(value), float(value) ** 2, 1.0], tf.float64)
    total = strategy.reduce("SUM", strategy.run(lambda: tf.identity(local)), axis=None).numpy()
    return bool(abs(total[0] ** 2 - total[2] * total[1]) < 0.5)


# ---------------------------------------------------------------- Keras 3 + MultiWorkerMirroredStrategy

def local_symbolic_build(model, strategy) -> None:
    """Keras 3 learns input shapes in ``fit`` by all-reducing a whole data batch, which MultiWorkerMirrored
    cannot do (keras-team/keras#20585); take the shapes from this worker's own batch instead."""
    if not is_multiworker(strategy) or not hasattr(model, "_symbolic_build"):
        return
    import tensorflow as tf

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = next(it)
                break
            data_batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, data_batch)
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = build


def _patch_keras_multiworker() -> None:
    """Keras 3 averages the per-step metric scalars across workers with ``axis=0``, which fails on a scalar
    (tensorflow/tensorflow#72388); average them with ``axis=None``. Only the multi-worker path changes."""
    try:
        from keras.src.backend.tensorflow import trainer
    except ImportError:  # pragma: no cover - another Keras layout
        return
    original = trainer.reduce_per_replica
    if getattr(original, "_cnnpipe", False) or not hasattr(trainer, "_collective_all_reduce_multi_worker"):
        return
    import tensorflow as tf

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0), values)
        return original(values, strategy, reduction)

    reduce_per_replica._cnnpipe = True
    trainer.reduce_per_replica = reduce_per_replica
