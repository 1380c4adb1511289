"""Sequences: the uint8 encoding, the npz / ucr / mnist1d sources, their bad inputs, the sequence presets, and
a tiny npz run from ingest to a bundle whose predict.py labels .npy files without TensorFlow."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke, tensorflow_free_env
from pipeline import config, sequence, sources

ROOT = Path(__file__).resolve().parents[1]


def data_cfg(*sets):
    return config.load(None, [f"data.{s}" for s in sets]).data


def waves(n_per_class=40, length=32, channels=2, seed=0):
    """Three separable classes: a sine, a square wave and a ramp, with noise, in 2 channels of other
    scales."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    shapes = [np.sin(2 * np.pi * 3 * t), np.sign(np.sin(2 * np.pi * 2 * t)), 2 * t - 1]
    xs, ys = [], []
    for label, base in enumerate(shapes):
        for _ in range(n_per_class):
            phase = rng.integers(0, 4)
            one = np.roll(base, phase) + 0.1 * rng.standard_normal(length)
            xs.append(np.stack([one * 3.0 + 10.0, -one * 0.01][:channels], axis=1))
            ys.append(label)
    return np.asarray(xs, np.float32), np.asarray(ys, np.int64)


def errors_of(result) -> list:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# ---- the encoding ------------------------------------------------------------------------------------------
def test_fit_length_pads_cuts_and_resamples():
    x = np.arange(1.0, 5.0)[:, None]                                    # [4, 1]: 1 2 3 4
    assert sequence.fit_length(x, 6, "pad")[:, 0].tolist() == [1, 2, 3, 4, 0, 0]
    assert sequence.fit_length(x, 2, "pad")[:, 0].tolist() == [1, 2]
    assert sequence.fit_length(x, 7, "resample")[:, 0].tolist() == [1, 1.5, 2, 2.5, 3, 3.5, 4]
    assert sequence.fit_length(x, 4, "resample") is x


def test_encoding_is_per_channel_and_round_trips_within_half_a_step():
    x, _ = waves()
    enc = sequence.fit_encoding(x)
    assert len(enc["offset"]) == 2 and enc["offset"][0] == pytest.approx(float(x[..., 0].min()))
    assert enc["scale"][1] == pytest.approx(float(np.ptp(x[..., 1])) / 255)
    q = sequence.encode(x, enc)
    assert q.dtype == np.uint8 and q.shape == x.shape
    assert q[..., 0].min() == 0 and q[..., 0].max() == 255 and q[..., 1].max() == 255
    err = np.abs(sequence.decode(q, enc) - x)
    assert (err <= np.asarray(enc["scale"]) / 2 + 1e-6).all()
    beyond = sequence.encode(np.array([[-1e9, 1e9]]), enc)             # outside the training range: clipped
    assert beyond.tolist() == [[0, 0]] or beyond.tolist() == [[0, 255]]


# ---- npz ---------------------------------------------------------------------------------------------------
def test_npz_source_fits_the_encoding_on_the_training_split(tmp_path):
    x, y = waves()
    np.savez(tmp_path / "w.npz", x=x, y=y, class_names=np.array(["sine", "square", "ramp"]))
    src = sources.load(data_cfg(f"source=npz:{tmp_path / 'w.npz'}"))
    images, labels = src.splits["all"]
    assert images.shape == (120, 1, 32, 2) and images.dtype == np.uint8
    assert src.class_names == ["sine", "square", "ramp"] and labels.tolist() == y.tolist()
    enc = src.encoding
    assert enc["kind"] == "sequence" and enc["length"] == 32 and enc["channels"] == 2
    from pipeline import data

    plan = data.split_indices({"all": labels}, data_cfg())
    train = images[plan["train"]]
    assert train[..., 0].min() == 0 and train[..., 0].max() == 255    # fitted on train alone


def test_npz_string_labels_and_own_splits(tmp_path):
    x, y = waves(10)
    names = np.array(["b-sine", "a-square", "c-ramp"])[y]
    np.savez(tmp_path / "s.npz", x_train=x[::2], y_train=names[::2], x_test=x[1::2], y_test=names[1::2])
    src = sources.load(data_cfg(f"source=npz:{tmp_path / 's.npz'}"))
    assert src.class_names == ["a-square", "b-sine", "c-ramp"] and set(src.splits) == {"train", "test"}
    assert src.splits["test"][0].shape == (15, 1, 32, 2)


def test_unequal_lengths_are_padded_or_resampled(tmp_path):
    src = sources.load(data_cfg("source=ucr:JapaneseVowels"))
    assert src.splits["train"][0].shape == (270, 1, 29, 12)
    assert src.splits["test"][0].shape == (370, 1, 29, 12)
    assert any("lengths 7..29 padded" in n for n in src.notes)
    src = sources.load(data_cfg("source=ucr:JapaneseVowels", "sequence_length=16", "sequence_fit=resample"))
    assert src.splits["train"][0].shape == (270, 1, 16, 12) and src.encoding["fit"] == "resample"


def _ragged(path):
    x = np.empty(2, dtype=object)
    x[0], x[1] = np.zeros((5, 1)), np.zeros((7, 1))
    np.savez(path, x=x, y=np.array([0, 1]))


def _save(**arrays):
    return lambda path: np.savez(path, **arrays)


X, Y = waves(4)
BAD_NPZ = [
    ("ragged", _ragged, "x is an object array (ragged sequences?)"),
    ("four_d", _save(x=np.zeros((4, 2, 3, 1)), y=np.array([0, 1, 0, 1])),
     "x has shape [4, 2, 3, 1]; expected [n, length, channels] or [n, length]"),
    ("one_d", _save(x=np.zeros(8), y=np.zeros(8, int)), "x has shape [8]"),
    ("count", _save(x=X, y=Y[:5]), "y holds 5 labels but the sequences number 12"),
    ("nan", _save(x=np.where(np.arange(12)[:, None, None] == 3, np.nan, X), y=Y),
     "x[3] holds NaN or infinite"),
    ("one_class", _save(x=X, y=np.zeros(12, int)), "needs at least 2 classes, found 1"),
    ("no_x", _save(a=X), "no array x (or x_train); found a"),
    ("no_y", _save(x=X), "x has no labels y"),
    ("names", _save(x=X, y=Y, class_names=np.array(["a"])),
     "class_names lists 1 names but the labels go up to 2"),
    ("text_x", _save(x=np.array([["a", "b"], ["c", "d"]]), y=np.array([0, 1])), "x holds <U1 values"),
    ("not_npz", lambda p: Path(p).write_bytes(b"not a zip"), "not a readable .npz archive"),
]


@pytest.mark.parametrize("name, make, needle", BAD_NPZ, ids=[b[0] for b in BAD_NPZ])
def test_bad_npz_is_one_line_and_writes_nothing(workdir, name, make, needle):
    make(workdir / f"{name}.npz")
    result = invoke(["ingest", "--run", "bad", "--set", f"data.source=npz:{name}.npz"])
    assert result.exit_code == 1, result.output
    errors = errors_of(result)
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert f"npz:{name}.npz" in errors[0] and needle in errors[0], errors[0]
    data_dir = workdir / "runs" / "bad" / "data"
    assert not (data_dir / "classes.json").exists() and not list(data_dir.glob("*.tfrecord"))


def test_missing_npz_and_missing_argument(workdir):
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=npz:nope.npz"])
    assert result.exit_code == 1 and errors_of(result) == ["error: data.source npz:nope.npz: no such file"]
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=npz:"])
    assert result.exit_code == 2
    assert errors_of(result) == ["error: data.source: npz: needs an argument, e.g. npz:<file>"]
    assert not (workdir / "runs" / "bad" / "data" / "classes.json").exists()


# ---- ucr and mnist1d ---------------------------------------------------------------------------------------
def test_unknown_ucr_name_lists_what_is_available(workdir):
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=ucr:NoSuchSet"])
    assert result.exit_code == 1, result.output
    errors = errors_of(result)
    assert len(errors) == 1 and "ucr:NoSuchSet: unknown dataset; available offline: " in errors[0], errors
    for name in ("ArrowHead", "GunPoint", "ItalyPowerDemand", "JapaneseVowels"):
        assert name in errors[0]
    assert "Tecator" not in errors[0]                                   # a regression problem, not classes
    assert not (workdir / "runs" / "bad" / "data" / "classes.json").exists()


def test_ucr_keeps_the_archive_split_and_names_case_insensitively(workdir):
    result = invoke(["ingest", "--run", "gp", "--set", "data.source=ucr:gunpoint"])
    assert result.exit_code == 0, result.output
    meta = json.loads((workdir / "runs" / "gp" / "data" / "classes.json").read_text())
    assert meta["image_shape"] == [1, 150, 1] and meta["class_names"] == ["1", "2"]
    assert meta["counts"]["test"] == 150 and meta["counts"]["train"] + meta["counts"]["val"] == 50
    assert meta["encoding"]["kind"] == "sequence" and meta["encoding"]["length"] == 150
    basic = sources.load(data_cfg("source=ucr:BasicMotions"))
    assert basic.class_names == ["Standing", "Running", "Walking", "Badminton"]
    assert basic.splits["train"][0].shape == (40, 1, 100, 6)


def test_mnist1d_is_generated_offline_with_its_split():
    state = np.random.get_state()[1].copy()
    src = sources.load(data_cfg("source=mnist1d"))
    assert np.array_equal(np.random.get_state()[1], state)             # the global random state is restored
    assert src.splits["train"][0].shape == (4000, 1, 40, 1)
    assert src.splits["test"][0].shape == (1000, 1, 40, 1)
    assert src.class_names == [str(i) for i in range(10)]
    assert np.bincount(src.splits["test"][1]).min() > 60
    assert sources.identity(data_cfg("source=mnist1d"))["source"]["mnist1d"]


def test_sequence_presets_have_the_published_sizes():
    from pipeline import models

    m = config.load(None, ["model.preset=mnist1d_cnn", "model.batch_norm=false"]).model
    ops = models.plan(m, (1, 40, 1), 10)
    assert sum(o.params for o in ops) == 5210                          # the paper's count
    assert [o.out_shape for o in ops if o.kind == "conv1d"] == [(20, 25), (10, 25), (5, 25)]
    m = config.load(None, ["model.preset=mnist1d_cnn"]).model         # batch norm after each convolution
    assert sum(o.params for o in models.plan(m, (1, 40, 1), 10)) == 5210 - 3 * 25 + 3 * 4 * 25
    f = config.load(None, ["model.preset=fcn"]).model
    ops = models.plan(f, (1, 150, 1), 2)
    assert [o.out_shape for o in ops if o.kind == "conv1d"] == [(150, 128), (150, 256), (150, 128)]
    assert sum(o.params for o in ops) == (1152 + 512) + (164_096 + 1024) + (98_432 + 512) + 258


@pytest.mark.parametrize("setting, needle", [
    ("data.sequence_fit=stretch", "data.sequence_fit: 'stretch' is not one of pad, resample"),
    ("data.sequence_length=-1", "data.sequence_length: -1 is below the minimum 0"),
])
def test_bad_sequence_keys(workdir, setting, needle):
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=ucr:GunPoint", "--set", setting])
    assert result.exit_code == 2 and errors_of(result) == [f"error: {needle}"], result.output


# ---- end to end: npz -> int8 bundle -> predict.py on .npy without TensorFlow -------------------------------
TINY_SEQ = ["--set", "model.preset=conv1d", "--set", "model.filters=[8, 16]", "--set", "model.dense=[]",
            "--set", "train.epochs=12", "--set", "train.batch_size=16", "--set", "train.verbose=0",
            "--set", "train.learning_rate=0.01", "--set", "export.representative_samples=60",
            "--set", "export.golden_vectors=4", "--set", "export.max_class_drop=10"]


@pytest.mark.slow  # about 40 s: ingest, train, evaluate, export with TFLM, two predict processes
def test_npz_run_end_to_end_and_predict_npy_without_tensorflow(workdir):
    x, y = waves(40)
    np.savez(workdir / "w.npz", x=x, y=y, class_names=np.array(["sine", "square", "ramp"]))
    result = invoke(["run", "--run", "w", "--set", "data.source=npz:w.npz", *TINY_SEQ])
    assert result.exit_code == 0, result.output
    bundle = workdir / "exported" / "w"
    card = json.loads((bundle / "model_card.json").read_text())
    enc = card["input"]["encoding"]
    assert card["input"]["shape"] == [1, 1, 32, 2] and enc["kind"] == "sequence" and len(enc["offset"]) == 2
    assert card["files"]["int8"]["parity"]["accuracy"] > 0.8            # chance is 1/3
    assert (bundle / "micro" / "golden_vectors.h").is_file() and card["micro"]["golden_vectors"] == 4
    # fresh sequences in signal units, one of them 1-D to show the other channel count is refused
    xt, yt = waves(3, seed=7)
    paths = []
    for i in range(len(yt)):
        paths.append(workdir / f"s{i}.npy")
        np.save(paths[-1], xt[i])
    np.save(workdir / "one_channel.npy", xt[0][:, 0])
    env = tensorflow_free_env(workdir)
    args = ["predict.py", "--json", *map(str, paths), str(workdir / "one_channel.npy")]
    done = subprocess.run([sys.executable, *args],
                          cwd=bundle, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    rows = json.loads(done.stdout)
    names = ["sine", "square", "ramp"]
    right = sum(r["top"][0]["label"] == names[yt[i]] for i, r in enumerate(rows[:-1]))
    assert right >= 8, rows                                             # 9 sequences, 3 classes
    assert done.stderr.strip().splitlines() == [
        f"error: {workdir / 'one_channel.npy'}: cannot read sequence (has 1 channel(s); the model takes 2)"]
    # cnnpipe predict gives the same labels
    cli = invoke(["predict", bundle / "model_int8.tflite", *paths, "--json"])
    assert cli.exit_code == 0, cli.output
    assert [r["top"][0]["label"] for r in json.loads(cli.output)] == [r["top"][0]["label"] for r in rows[:-1]]
