"""Augmentation: each op changes images when on, keeps shape/dtype/range, is seeded, mixes labels correctly,
and runs inside tf.data on batches."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import augment, config
from pipeline.errors import ConfigError

K = 5
ON = {"hflip": True, "vflip": True, "rotation": 0.1, "zoom": 0.3, "translate": 0.2, "contrast": 0.5,
      "brightness": 0.3, "cutout": 0.4, "mixup": 0.4, "cutmix": 1.0}


def aug_cfg(**kw):
    return config.from_dict({"augment": kw}).augment


@pytest.fixture(scope="module")
def batch():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = np.zeros((8, 12, 10, 3), np.float32)
    x[:, 2:9, 1:6] = rng.uniform(60, 255, (8, 7, 5, 3))  # an off-centre bright patch: flips move it
    y = tf.one_hot(np.arange(8) % K, K).numpy()
    return x, y


def apply(fn, x, y):
    out_x, out_y = fn(x, y)
    return out_x.numpy(), out_y.numpy()


def test_nothing_enabled_gives_none():
    assert augment.build(aug_cfg(), K, 0) is None
    assert augment.enabled(aug_cfg()) == []


@pytest.mark.parametrize("op", list(ON))
def test_each_op(op, batch):
    x, y = batch
    fn = augment.build(aug_cfg(**{op: ON[op]}), K, seed=3)
    assert fn.ops == [op]
    out_x, out_y = apply(fn, x, y)
    assert out_x.shape == x.shape and out_x.dtype == np.float32
    assert out_x.min() >= 0.0 and out_x.max() <= 255.0
    assert not np.allclose(out_x, x), f"{op} left the images unchanged"
    np.testing.assert_allclose(out_y.sum(axis=1), 1.0, atol=1e-5)
    if op in ("mixup", "cutmix"):
        assert not np.allclose(out_y, y) and (out_y >= 0).all()
    else:
        np.testing.assert_array_equal(out_y, y)
    again = apply(augment.build(aug_cfg(**{op: ON[op]}), K, seed=3), x, y)
    np.testing.assert_array_equal(again[0], out_x)  # same seed, same result
    np.testing.assert_array_equal(again[1], out_y)


def test_all_ops_together_and_seeds_differ(batch):
    x, y = batch
    a = apply(augment.build(aug_cfg(**ON), K, seed=1), x, y)
    b = apply(augment.build(aug_cfg(**ON), K, seed=2), x, y)
    assert a[0].shape == x.shape and 0 <= a[0].min() and a[0].max() <= 255
    np.testing.assert_allclose(a[1].sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(a[0], b[0])


def test_cutmix_labels_match_pasted_area(batch):
    """Constant images with distinct values: the share of pasted pixels is the partner's label weight."""
    _, y = batch
    x = np.stack([np.full((12, 10, 3), 20.0 * (i + 1), np.float32) for i in range(len(y))])
    out_x, out_y = apply(augment.build(aug_cfg(cutmix=1.0), K, seed=4), x, y)
    mixed = 0
    for i in range(len(x)):
        values = out_x[i, ..., 0]
        kept = np.mean(values == x[i, 0, 0, 0])
        expected = kept * y[i]
        others = set(np.unique(values)) - {x[i, 0, 0, 0]}
        assert len(others) <= 1  # one partner per image
        if others:
            partner = int(round(others.pop() / 20.0)) - 1
            expected = expected + (1 - kept) * y[partner]
            mixed += 1
        np.testing.assert_allclose(out_y[i], expected, atol=1e-5)
    assert mixed > 0


def test_runs_in_tf_data_on_batches(batch):
    import tensorflow as tf

    x, y = batch
    fn = augment.build(aug_cfg(hflip=True, translate=0.1, cutout=0.3, mixup=0.2, cutmix=1.0), K, seed=0)
    ds = tf.data.Dataset.from_tensor_slices((np.repeat(x, 5, 0), np.repeat(y, 5, 0))).batch(16)  # last: 8
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    sizes = []
    for images, labels in ds:
        assert images.dtype == tf.float32 and tuple(images.shape[1:]) == x.shape[1:]
        np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)
        sizes.append(int(images.shape[0]))
    assert sizes == [16, 16, 8]


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="augment.rotation"):
        aug_cfg(rotation=-0.1)
    with pytest.raises(ConfigError, match="augment.hflip"):
        aug_cfg(hflip="yes")
    with pytest.raises(ConfigError, match="augment.blur"):
        aug_cfg(blur=1)


def test_wrong_label_width_is_rejected(batch):
    x, y = batch
    fn = augment.build(aug_cfg(hflip=True), K + 1, seed=0)
    with pytest.raises(Exception, match="[Ss]hape"):
        fn(x, y)


def test_preview_and_bench_data_commands(workdir):
    """`cnnpipe preview` writes a PNG grid; `cnnpipe bench-data` prints images/s and writes JSON."""
    import json

    from conftest import invoke

    sets = ["--run", "aug", "--set", "augment.translate=0.1", "--set", "augment.mixup=0.2",
            "--set", "train.batch_size=64"]
    assert invoke(["ingest", *sets]).exit_code == 0
    result = invoke(["preview", *sets, "--count", "12", "--columns", "6"])
    assert result.exit_code == 0, result.output
    png = workdir / "runs" / "aug" / "data" / "preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "translate, mixup" in result.output
    result = invoke(["bench-data", *sets, "--epochs", "1", "--train-steps", "0", "--json-out", "bench.json"])
    assert result.exit_code == 0, result.output
    figures = json.loads((workdir / "bench.json").read_text())
    assert figures["pipeline"]["images_per_second"] > 0 and figures["augmentation"] == ["translate", "mixup"]
    # 1,797 digits fit: auto keeps them
    assert figures["cache"] == "memory" and "cache: memory" in result.output
    assert figures["pipeline"]["images_per_epoch"] == json.loads(
        (workdir / "runs" / "aug" / "data" / "classes.json").read_text())["counts"]["train"]
    result = invoke(["preview", "--run", "never_ingested"])
    assert result.exit_code != 0 and "cnnpipe ingest" in result.output


def test_label_text():
    from tasks.preview import label_text

    names = ["a", "b", "c"]
    assert label_text([0, 1, 0], names) == "b"
    assert label_text([0.3, 0.7, 0], names) == "b 0.70 / a 0.30"


@pytest.mark.parametrize("side", [1, 2, 3, 4, 7])
def test_box_mask_covers_exactly_side_by_side_pixels(side):
    import tensorflow as tf

    from pipeline.augment import _box_mask

    half = tf.constant([side / 2.0])
    mask = _box_mask(tf.shape(tf.zeros([1, 16, 16, 1])), tf.constant([8.5]), tf.constant([8.5]), half, half)
    assert int(tf.reduce_sum(tf.cast(mask, tf.int32))) == side * side


def test_bench_data_times_xla_compiled_training(workdir, monkeypatch):
    """`cnnpipe bench-data --jit-compile` times training steps compiled by XLA and says so; the thread
    settings TensorFlow reads at start-up are recorded with the figures."""
    import json

    from conftest import invoke

    assert invoke(["ingest", "--run", "xla"]).exit_code == 0
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "2")
    result = invoke(["bench-data", "--run", "xla", "--epochs", "1", "--train-steps", "2", "--jit-compile",
                     "--json-out", "xla.json"])
    assert result.exit_code == 0, result.output
    figures = json.loads((workdir / "xla.json").read_text())
    assert figures["training"]["jit_compile"] is True and figures["training"]["steps"] == 2
    assert figures["training"]["images_per_second"] > 0
    assert "2 steps of small, XLA, float32, input excluded" in result.output
    assert figures["env"] == {"TF_NUM_INTEROP_THREADS": "2"}


def test_bench_data_times_the_configured_precision(workdir):
    """`cnnpipe bench-data` times the model as `cnnpipe train` would train it: under
    `train.mixed_precision: bfloat16`, in mixed_bfloat16; the process' policy is left as it was."""
    import json

    import keras

    from conftest import invoke

    assert invoke(["ingest", "--run", "bf16"]).exit_code == 0
    result = invoke(["bench-data", "--run", "bf16", "--epochs", "1", "--train-steps", "2",
                     "--set", "train.mixed_precision=bfloat16", "--json-out", "bf16.json"])
    assert result.exit_code == 0, result.output
    figures = json.loads((workdir / "bf16.json").read_text())
    assert figures["training"]["precision"] == "mixed_bfloat16" and figures["training"]["steps"] == 2
    assert "2 steps of small, mixed_bfloat16, input excluded" in result.output
    assert keras.mixed_precision.global_policy().name == "float32"
