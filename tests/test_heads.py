"""Detection and segmentation heads: targets, losses, decoding, matching, metrics, parity and figures, with
hand-made numbers."""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import decoding
from pipeline.heads import detect, segment

REPO = Path(__file__).resolve().parents[1]
HW = (64, 64)          # a 64 x 64 image at stride 8: an 8 x 8 grid, cells 8 px wide
NAMES = ["circle", "square"]


def grid(cells: dict, shape=(8, 8), k: int = 2) -> np.ndarray:
    """Detection output [gh, gw, K+1]: background 1.0 everywhere, except ``{(i, j): (class, p)}`` cells where
    the object channel gets ``p`` and background ``1 - p``."""
    probs = np.zeros(shape + (k + 1,), dtype=np.float32)
    probs[..., 0] = 1.0
    for (i, j), (c, p) in cells.items():
        probs[i, j, 0] = 1.0 - p
        probs[i, j, c + 1] = p
    return probs


def encode_reference(objects, image_hw, stride, k):
    """Loop version of ``detect.encode``: larger object wins a cell, equal areas the later one."""
    b, m, _ = objects.shape
    gh, gw = image_hw[0] // stride, image_hw[1] // stride
    out = np.zeros((b, gh, gw, k + 1), dtype=np.float32)
    out[..., 0] = 1.0
    best = np.full((b, gh, gw), -1.0)
    for n in range(b):
        for c, cx, cy, w, h in objects[n]:
            if c < 0:
                continue
            i = min(max(int(math.floor(cy * gh)), 0), gh - 1)
            j = min(max(int(math.floor(cx * gw)), 0), gw - 1)
            if w * h >= best[n, i, j]:
                best[n, i, j] = w * h
                out[n, i, j] = 0.0
                out[n, i, j, int(c) + 1] = 1.0
    return out


# ---------------------------------------------------------------------------------------------- decoding
def test_decoding_imports_only_numpy_and_stdlib():
    tree = ast.parse((REPO / "pipeline" / "decoding.py").read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    assert modules - allowed == set(), modules - allowed
    assert "numpy" in modules


def test_modules_import_without_tensorflow(tmp_path):
    from conftest import tensorflow_free_env

    code = ("import sys; from pipeline import decoding; from pipeline.heads import detect, segment; "
            "import numpy as np; p = np.zeros((2, 2, 2)); p[..., 0] = 1; p[1, 1] = [0.2, 0.8]; "
            "print(decoding.centroids(p, (16, 16))); assert 'tensorflow' not in sys.modules")
    env = tensorflow_free_env(tmp_path, block_pipeline=False)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[{'class': 0, 'x': 12.0, 'y': 12.0, 'score': 0.8}]" in out.stdout


def test_centroids_two_objects_exact_positions_and_order():
    probs = grid({(1, 2): (0, 0.9), (5, 6): (1, 0.7)})
    found = decoding.centroids(probs, HW)
    assert found == [{"class": 0, "x": 20.0, "y": 12.0, "score": pytest.approx(0.9)},
                     {"class": 1, "x": 52.0, "y": 44.0, "score": pytest.approx(0.7)}]


def test_centroids_merge_adjacent_cells_weighted_by_probability():
    probs = grid({(3, 3): (0, 0.6), (3, 4): (0, 0.9)})
    [obj] = decoding.centroids(probs, HW)
    assert obj["x"] == pytest.approx((0.6 * 28 + 0.9 * 36) / 1.5)
    assert obj["y"] == pytest.approx(28.0)
    assert obj["score"] == pytest.approx(0.9)


def test_centroids_connectivity_and_classes_kept_apart():
    diagonal = grid({(2, 2): (0, 0.8), (3, 3): (0, 0.8)})
    assert len(decoding.centroids(diagonal, HW)) == 2
    assert len(decoding.centroids(diagonal, HW, connectivity=8)) == 1
    other_class = grid({(2, 2): (0, 0.8), (2, 3): (1, 0.8)})
    assert sorted(o["class"] for o in decoding.centroids(other_class, HW)) == [0, 1]
    l_shape = grid({(0, 0): (1, 0.6), (1, 0): (1, 0.6), (1, 1): (1, 0.9)})
    [obj] = decoding.centroids(l_shape, HW)
    assert obj["x"] == pytest.approx((0.6 * 4 + 0.6 * 4 + 0.9 * 12) / 2.1)
    assert obj["y"] == pytest.approx((0.6 * 4 + 0.6 * 12 + 0.9 * 12) / 2.1)


def test_centroids_threshold_and_argmax():
    probs = grid({(1, 1): (0, 0.45), (4, 4): (0, 0.55)})
    assert [o["y"] for o in decoding.centroids(probs, HW, threshold=0.5)] == [36.0]
    assert len(decoding.centroids(probs, HW, threshold=0.4)) == 1  # 0.45 loses the argmax to 0.55 background
    assert decoding.centroids(grid({}), HW) == []


def test_centroids_non_square_and_int8_dequantized():
    probs = grid({(0, 7): (1, 0.75)}, shape=(4, 8))             # a 32 x 128 image: cells 8 high, 16 wide
    [obj] = decoding.centroids(probs, (32, 128))
    assert (obj["x"], obj["y"]) == (7.5 * 16, 0.5 * 8)
    q = np.round(probs / (1 / 256) - 128).astype(np.int8)         # int8 softmax output: scale 1/256, zp -128
    deq = (q.astype(np.float32) + 128) / 256
    [obj8] = decoding.centroids(deq[None], (32, 128))             # batch of one accepted
    assert (obj8["class"], obj8["x"], obj8["y"]) == (1, 120.0, 4.0)
    assert obj8["score"] == pytest.approx(0.75, abs=1 / 256)


def test_mask_and_describe():
    probs = np.zeros((2, 3, 3), dtype=np.float32)
    probs[..., 2] = 0.5
    probs[0, 0, 1] = 0.9
    m = decoding.mask(probs)
    assert m.dtype == np.uint8 and m.tolist() == [[1, 2, 2], [2, 2, 2]]
    text = decoding.describe_objects([{"class": 0, "x": 34.5, "y": 60.0, "score": 0.931}], NAMES)
    assert text == "circle x=34.5 y=60.0 score=0.93"
    assert decoding.describe_objects([], NAMES) == "no objects"


# ---------------------------------------------------------------------------------------------- encode
def test_encode_matches_numpy_reference():
    rng = np.random.default_rng(0)
    objects = np.full((3, 6, 5), -1.0, dtype=np.float32)
    objects[0, :4] = np.c_[rng.integers(0, 3, 4), rng.uniform(0, 1, (4, 2)), rng.uniform(0.05, 0.3, (4, 2))]
    objects[1, :2] = [[2, 1.0, 0.0, 0.1, 0.1], [0, -0.02, 1.3, 0.1, 0.1]]       # border and outside: clipped
    objects[1, 2:4] = [[0, 0.30, 0.30, 0.2, 0.2], [1, 0.32, 0.31, 0.1, 0.1]]    # one cell: the larger wins
    objects[1, 4:6] = [[0, 0.80, 0.80, 0.1, 0.1], [2, 0.81, 0.82, 0.1, 0.1]]    # equal areas: the later wins
    # image 2: padding only -> all background
    got = np.asarray(detect.encode(objects, (48, 64), 8, 3))
    assert got.shape == (3, 6, 8, 4) and got.dtype == np.float32
    np.testing.assert_array_equal(got, encode_reference(objects, (48, 64), 8, 3))
    assert got[1, 0, 7, 3] == 1 and got[1, 5, 0, 1] == 1
    assert got[1, 1, 2, 1] == 1 and got[1, 4, 6, 3] == 1
    assert (got[2, ..., 0] == 1).all()
    assert (got.sum(-1) == 1).all()
    empty = np.asarray(detect.encode(np.zeros((2, 0, 5), np.float32), (48, 64), 8, 3))   # no rows at all
    assert empty.shape == (2, 6, 8, 4) and (empty[..., 0] == 1).all()
    single = np.asarray(detect.encode(objects[1], (48, 64), 8, 3))                     # unbatched [M, 5]
    np.testing.assert_array_equal(single, got[1])


def test_encode_inside_tf_data_map():
    import tensorflow as tf

    objects = np.full((4, 3, 5), -1.0, dtype=np.float32)
    objects[:, 0] = [[0, 0.1, 0.1, 0.1, 0.1]] * 4
    ds = tf.data.Dataset.from_tensor_slices(objects).batch(2).map(lambda o: detect.encode(o, HW, 8, 2))
    batches = list(ds.as_numpy_iterator())
    assert [b.shape for b in batches] == [(2, 8, 8, 3)] * 2
    assert (batches[0][:, 0, 0, 1] == 1).all() and batches[0][..., 1:].sum() == 2


def test_segment_encode():
    masks = np.array([[[0, 1], [2, 1]]], dtype=np.uint8)
    got = np.asarray(segment.encode(masks, 3))
    assert got.shape == (1, 2, 2, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got.argmax(-1), masks)


# ---------------------------------------------------------------------------------------------- losses
def test_detection_loss_weights_object_cells():
    target = np.zeros((1, 2, 2, 3), dtype=np.float32)
    target[..., 0] = 1.0
    target[0, 0, 0] = [0, 1, 0]                        # one object cell (class 0)
    right = target * 0.7 + 0.1                          # 0.8 on the true channel everywhere, 0.1 elsewhere
    fn = detect.loss(2, object_weight=30.0)
    base = float(fn(target, right))
    wrong_object, wrong_background = right.copy(), right.copy()
    wrong_object[0, 0, 0] = [0.8, 0.1, 0.1]             # object cell called background
    wrong_background[0, 1, 1] = [0.1, 0.8, 0.1]         # background cell called an object
    cost_object = float(fn(target, wrong_object)) - base
    cost_background = float(fn(target, wrong_background)) - base
    assert cost_background == pytest.approx(-(math.log(0.1) - math.log(0.8)) / 4, rel=1e-5)   # 4 cells
    assert cost_object == pytest.approx(30.0 * cost_background, rel=1e-5)
    assert base == pytest.approx(-(30 + 3) * math.log(0.8) / 4, rel=1e-5)


def test_detection_loss_serializes():
    import keras

    fn = detect.loss(3, object_weight=50.0)
    config = keras.saving.serialize_keras_object(fn)
    again = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert type(again) is detect.Loss
    assert (again.num_classes, again.object_weight) == (3, 50.0)
    assert "cnnpipe>DetectionLoss" in detect.custom_objects()


@pytest.mark.filterwarnings("ignore:Skipping variable loading")
def test_model_compiled_with_detection_loss_saves_and_loads(tmp_path):
    import keras

    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 8, strides=8, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss=detect.loss(2, object_weight=20.0))
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert type(again.loss) is detect.Loss and again.loss.object_weight == 20.0


def test_segment_loss_is_pixel_mean_cross_entropy():
    target = np.asarray(segment.encode(np.array([[[0, 1]]]), 2))
    probs = np.array([[[[0.9, 0.1], [0.4, 0.6]]]], dtype=np.float32)
    expected = -(math.log(0.9) + math.log(0.6)) / 2
    assert float(segment.loss(2)(target, probs)) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------- matching
TRUTH = np.array([[0, 20 / 64, 12 / 64, 0.1, 0.1],       # circle at (20, 12)
                  [1, 52 / 64, 44 / 64, 0.1, 0.1]], dtype=np.float32)   # square at (52, 44)


def obj(c, x, y, s=0.9):
    return {"class": c, "x": x, "y": y, "score": s}


@pytest.mark.parametrize("found, tp, fp, fn", [
    ([obj(0, 20, 12), obj(1, 52, 44)], [1, 1], [0, 0], [0, 0]),            # perfect
    ([obj(0, 22, 14)], [1, 0], [0, 0], [0, 1]),                             # one miss
    ([obj(0, 20, 12), obj(0, 52, 44)], [1, 0], [1, 0], [0, 1]),            # wrong class
    ([obj(0, 29, 12), obj(1, 52, 44)], [0, 1], [1, 0], [1, 0]),            # 9 px away, too far
    ([obj(0, 20, 12, 0.6), obj(0, 21, 12, 0.8), obj(1, 52, 44)], [1, 1], [1, 0], [0, 0]),  # duplicate
])
def test_match_counts(found, tp, fp, fn):
    got = detect.match(TRUTH, found, HW, distance=8.0, num_classes=2)
    assert [g.tolist() for g in got] == [tp, fp, fn]


def test_match_greedy_by_score_and_padding():
    truth = np.array([[0, 10 / 64, 10 / 64, .1, .1], [0, 18 / 64, 10 / 64, .1, .1], [-1, 0, 0, 0, 0]])
    found = [obj(0, 14, 10, 0.5), obj(0, 17, 10, 0.9)]   # 0.9 takes (18, 10) first; 0.5 gets (10, 10)
    tp, fp, fn = detect.match(truth, found, HW, distance=4.0, num_classes=1)
    assert (tp.tolist(), fp.tolist(), fn.tolist()) == ([2], [0], [0])


def test_detect_metrics_exact():
    probs = np.stack([grid({(1, 2): (0, 0.9), (5, 6): (1, 0.8)}),      # image 0: perfect
                      grid({(1, 2): (1, 0.9)}),                           # image 1: circle called square
                      grid({(4, 4): (0, 0.7)})])                          # image 2: no objects, a false alarm
    truth = [TRUTH, TRUTH[:1], np.zeros((0, 5), np.float32)]
    m = detect.metrics(truth, probs, NAMES, HW, threshold=0.5, distance=8.0)
    # circle: tp 1, fp 1 (image 2), fn 1 (image 1); square: tp 1, fp 1 (image 1), fn 0
    assert m["per_class"]["circle"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2,
                                        "predicted": 2}
    assert m["per_class"]["square"] == {"precision": 0.5, "recall": 1.0, "f1": round(2 / 3, 6), "support": 1,
                                        "predicted": 2}
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, round(2 / 3, 6), round(4 / 7, 6))
    assert m["macro_f1"] == round((0.5 + 2 / 3) / 2, 6)
    assert (m["n_test"], m["n_objects"], m["background_only_images"]) == (3, 3, 1)
    assert (m["task"], m["threshold"], m["match_distance_px"]) == ("detect", 0.5, 8.0)
    assert m["class_names"] == NAMES
    json.dumps(m)
    perfect = detect.metrics(truth[:1], probs[:1], NAMES, HW)
    assert perfect["f1"] == perfect["macro_f1"] == 1.0


def test_detect_accumulator_streams():
    probs = np.stack([grid({(1, 2): (0, 0.9)}), grid({(5, 6): (1, 0.8)}), grid({})])
    truth = [TRUTH, TRUTH, TRUTH[:1]]
    acc = detect.Accumulator(2, HW, 0.5, 8.0)
    for k in range(3):
        acc.add(truth[k:k + 1], probs[k:k + 1])
    assert acc.result(NAMES) == detect.metrics(truth, probs, NAMES, HW, 0.5, 8.0)


def test_detect_parity_sign_and_value():
    truth = [TRUTH]
    keras_probs = grid({(1, 2): (0, 0.9), (5, 6): (1, 0.8)})[None]
    file_probs = keras_probs.copy()
    file_probs[0, 5, 6] = [0.6, 0, 0.4]                   # the int8 file loses the square
    p = detect.parity(keras_probs, file_probs, truth, NAMES, HW, 0.5, 8.0)
    assert (p["metric"], p["keras_value"], p["value"]) == ("f1", 1.0, round(2 / 3, 6))
    assert p["drop_points"] == pytest.approx(100 / 3, abs=1e-3)
    assert p["per_class"] == {"circle": {"value": 1.0, "delta_points": 0.0},
                              "square": {"value": 0.0, "delta_points": -100.0}}
    assert p["max_abs_prob_diff"] == pytest.approx(0.4)
    assert p["changed"] == pytest.approx(1 / 64)


# ---------------------------------------------------------------------------------------------- segment
def onehot(masks, k):
    return np.eye(k, dtype=np.float32)[np.asarray(masks)]


SEG_TRUTH = np.array([[[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [0, 0, 0, 0],
                       [2, 2, 0, 0]]], dtype=np.uint8)
SEG_PRED = np.array([[[0, 1, 1, 1],
                      [0, 0, 1, 1],
                      [0, 0, 0, 0],
                      [2, 0, 0, 1]]], dtype=np.uint8)


def test_segment_iou_hand_computed():
    m = segment.metrics(SEG_TRUTH, onehot(SEG_PRED, 4), ["bg", "a", "b", "never"])
    # bg: true 10, predicted 9, hit 8 -> 8/11; a: true 4, pred 6, hit 4 -> 4/6;
    # b: true 2, pred 1, hit 1 -> 1/2; never: absent from both -> null, left out of the mean
    assert m["per_class"]["bg"] == {"iou": round(8 / 11, 6), "pixels": 10, "predicted_pixels": 9}
    assert m["per_class"]["a"] == {"iou": round(4 / 6, 6), "pixels": 4, "predicted_pixels": 6}
    assert m["per_class"]["b"] == {"iou": 0.5, "pixels": 2, "predicted_pixels": 1}
    assert m["per_class"]["never"] == {"iou": None, "pixels": 0, "predicted_pixels": 0}
    assert m["mean_iou"] == round((8 / 11 + 4 / 6 + 0.5) / 3, 6)
    assert m["pixel_accuracy"] == round(13 / 16, 6)
    assert m["confusion_matrix"] == [[8, 2, 0, 0], [0, 4, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert (m["task"], m["n_test"]) == ("segment", 1)
    json.dumps(m)


def test_segment_accumulator_equals_one_shot():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, (5, 6, 7)).astype(np.uint8)
    probs = rng.dirichlet([1, 1, 1], (5, 6, 7)).astype(np.float32)
    acc = segment.Accumulator(3)
    for start, stop in ((0, 2), (2, 3), (3, 5)):
        acc.add(truth[start:stop], probs[start:stop])
    assert acc.result(["x", "y", "z"]) == segment.metrics(truth, probs, ["x", "y", "z"])
    with pytest.raises(ValueError):
        segment.Accumulator(2).add(truth, probs[..., :2])


def test_segment_parity_sign_and_value():
    names = ["bg", "a", "b", "never"]
    keras_probs, file_probs = onehot(SEG_TRUTH, 4), onehot(SEG_PRED, 4)
    p = segment.parity(keras_probs, file_probs, SEG_TRUTH, names)
    assert (p["metric"], p["keras_value"]) == ("mean_iou", 1.0)
    assert p["value"] == round((8 / 11 + 4 / 6 + 0.5) / 3, 6)
    assert p["drop_points"] == pytest.approx(100 * (1 - (8 / 11 + 4 / 6 + 0.5) / 3), abs=1e-3)
    assert p["per_class"]["b"] == {"value": 0.5, "delta_points": -50.0}
    assert set(p["per_class"]) == {"bg", "a", "b"}
    assert p["changed"] == pytest.approx(3 / 16)
    assert p["max_abs_prob_diff"] == 1.0


# ------------------------------------------------------------------------------------------- figures, cards
def test_figures_are_png(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    probs = np.stack([grid({(1, 2): (0, 0.9), (5, 6): (1, 0.8)})] * 5)
    path = detect.figure(images, [TRUTH] * 5, probs, NAMES, tmp_path / "det.png", "Detections", 0.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < path.stat().st_size < 5_000_000
    gray = rng.integers(0, 256, (2, 4, 4, 1), dtype=np.uint8)
    path = segment.figure(np.concatenate([gray, gray]), np.concatenate([SEG_TRUTH] * 4),
                          onehot(np.concatenate([SEG_PRED] * 4), 4), ["bg", "a", "b", "never"],
                          tmp_path / "seg.png", "Segmentation", limit=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < path.stat().st_size < 5_000_000


def test_decoding_params_describe_the_output():
    d = detect.decoding_params((96, 128), 8, 0.6, NAMES)
    assert (d["grid_hw"], d["output_shape"], d["background_channel"]) == ([12, 16], [1, 12, 16, 3], 0)
    assert d["class_channels"] == {"circle": 1, "square": 2} and d["threshold"] == 0.6
    s = segment.decoding_params((32, 32), ["bg", "leaf"])
    assert s["output_shape"] == [1, 32, 32, 2] and s["palette"][0] == [0, 0, 0] and len(s["palette"]) == 2
    json.dumps([d, s])
    assert len(segment.default_palette(25)) == 25
    given = segment.decoding_params((8, 8), ["a", "b", "c"], palette=["#ff0000", [0, 255, 0]])["palette"]
    assert given == [[255, 0, 0], [0, 255, 0], segment.TAB10[1]]


# ---- detect.boxes: box channels after the class scores ---------------------------------------------------
def test_encode_with_boxes_marks_the_centre_cell_with_offset_and_size():
    from pipeline.heads import detect

    objects = np.array([[[1, 0.3, 0.6, 0.2, 0.1], [-1, 0, 0, 0, 0]]], np.float32)
    out = np.asarray(detect.encode(objects, (96, 96), 8, 2, boxes=True))
    assert out.shape == (1, 12, 12, 3 + 4)
    np.testing.assert_allclose(out[0, 7, 3], [0, 0, 1, 0.6, 0.2, 0.2, 0.1], atol=1e-5)
    rest = np.delete(out[0].reshape(144, 7), 7 * 12 + 3, axis=0)
    assert (rest[:, 0] == 1).all() and not rest[:, 1:].any()
    np.testing.assert_array_equal(out[..., :3], np.asarray(detect.encode(objects, (96, 96), 8, 2)))


def test_with_boxes_decodes_the_box_of_the_centre_cell():
    from pipeline import decoding

    out = np.zeros((12, 12, 3 + 4))
    out[..., 0] = 1.0
    out[7, 3, :3] = [0.1, 0.0, 0.9]
    out[7, 3, 3:] = [0.6, 0.2, 0.2, 0.1]
    (found,) = decoding.with_boxes(out, (96, 96), 0.5)
    assert found["class"] == 1 and (found["x"], found["y"]) == (28.0, 60.0)
    np.testing.assert_allclose(found["box"], [19.2, 52.8, 38.4, 62.4], atol=1e-6)


def test_box_loss_counts_only_object_cells_weighted_like_their_class():
    from pipeline.heads import detect

    truth = np.zeros((1, 1, 2, 2 + 4), np.float32)
    truth[0, 0, 0, :2] = [1, 0]                          # background cell
    truth[0, 0, 1, :2] = [0, 1]                          # object cell, box (0.5, 0.5, 0.2, 0.2)
    truth[0, 0, 1, 2:] = [0.5, 0.5, 0.2, 0.2]
    pred = truth.copy()
    pred[..., :2] = np.where(truth[..., :2] == 1, 0.99, 0.01)
    base = float(detect.loss(1, 10.0, boxes=True)(truth, pred))
    off = pred.copy()
    off[0, 0, 0, 2:] += 0.3                              # the background cell's box: ignored
    assert float(detect.loss(1, 10.0, boxes=True)(truth, off)) == pytest.approx(base, abs=1e-6)
    off = pred.copy()
    off[0, 0, 1, 2] += 0.1                               # 0.1 of L1 on the object cell, x10, mean of 2 cells
    assert float(detect.loss(1, 10.0, boxes=True)(truth, off)) == pytest.approx(base + 0.5, abs=1e-5)


def test_box_iou_of_perfect_and_shifted_boxes():
    from pipeline.heads import detect

    truth = [np.array([[0, 0.3, 0.6, 0.2, 0.1]], np.float32)]
    out = np.zeros((1, 12, 12, 2 + 4), np.float32)
    out[0, 7, 3, 2:] = [0.6, 0.2, 0.2, 0.1]
    assert detect.box_iou(truth, out, (96, 96)) == {"mean_box_iou": pytest.approx(1.0, abs=1e-5), "boxes": 1}
    out[0, 7, 3, 4] = 0.1                                # half as wide: IoU 1/2
    assert detect.box_iou(truth, out, (96, 96))["mean_box_iou"] == pytest.approx(0.5, abs=1e-5)
