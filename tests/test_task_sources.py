"""Detection and segmentation sources: the scene generator (pipeline/scenes.py), yolo:<dir>, masks:<dir>,
scenes:detect|segment and `cnnpipe scenes`: round trips through files, split layouts, dominant-class labels
and every bad label or mask as a one-line error."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from conftest import invoke, one_line_error
from PIL import Image

from pipeline import config, scenes, sources
from pipeline.errors import ConfigError, PipelineError
from pipeline.sources.folder import decode


def data_cfg(**kw):
    return config.from_dict({"data": kw}).data


def decoded(path, **kw):
    image, reason = decode(path, data_cfg(channels=3, **kw))
    assert image is not None, reason
    return image


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A detect and a segment dataset of the same 24 scenes at 64 px, and the scenes themselves."""
    root = tmp_path_factory.mktemp("scenes")
    detect = scenes.write("detect", root / "detect", 24, 64, seed=7)
    segment = scenes.write("segment", root / "segment", 24, 64, seed=7)
    return {"detect": root / "detect", "segment": root / "segment", "summary": (detect, segment),
            "scenes": scenes.generate(24, 64, seed=7)}


def nothing_written(data_dir):
    """A stage that failed on its source leaves no file in its folder (no manifest, no shard)."""
    assert not data_dir.exists() or not [p for p in data_dir.rglob("*") if p.is_file()]


def fresh_copy(src, dst):
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------- generator

def test_generate_is_seeded_with_shapes_and_dtypes():
    images, objects, masks = scenes.generate(10, 64, seed=3)
    again = scenes.generate(10, 64, seed=3)
    assert images.shape == (10, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (10, 64, 64) and masks.dtype == np.uint8
    assert np.array_equal(images, again[0]) and np.array_equal(masks, again[2])
    assert all(np.array_equal(a, b) for a, b in zip(objects, again[1]))
    prefix = scenes.generate(4, 64, seed=3)  # image i depends on (seed, i) only
    assert np.array_equal(prefix[0], images[:4])
    assert not np.array_equal(scenes.generate(4, 64, seed=4)[0], images[:4])
    for boxes in objects:
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 5 and len(boxes) <= 4
        assert set(boxes[:, 0].tolist()) <= {0.0, 1.0, 2.0}
    assert set(np.unique(masks).tolist()) <= {0, 1, 2, 3}
    rect = scenes.generate(2, [48, 80], seed=1)
    assert rect[0].shape == (2, 48, 80, 3) and rect[2].shape == (2, 48, 80)
    assert scenes.class_names("detect") == ["circle", "square", "triangle"]
    assert scenes.class_names("segment") == ["background", "circle", "square", "triangle"]


def test_boxes_are_tight_around_the_mask_pixels_and_apart():
    size = 96
    images, objects, masks = scenes.generate(40, size, seed=11)
    counts = [len(o) for o in objects]
    assert min(counts) == 0 and max(counts) == 4 and sum(counts) >= 60
    sides = []
    for mask, boxes in zip(masks, objects):
        covered = np.zeros_like(mask, bool)
        for cls, cx, cy, w, h in boxes.tolist():
            x0, x1 = round((cx - w / 2) * size), round((cx + w / 2) * size)
            y0, y1 = round((cy - h / 2) * size), round((cy + h / 2) * size)
            assert 0 < x0 < x1 < size and 0 < y0 < y1 < size  # never touching the border
            inside = mask[y0:y1, x0:x1] == cls + 1
            # tight: the shape's pixels reach every edge of its box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y0:y1, x0:x1] |= inside
            sides.append(max(x1 - x0, y1 - y0))
        assert np.array_equal(covered, mask > 0)  # every object pixel lies in a box of its class
        centres = [(cx * size, cy * size) for _, cx, cy, _, _ in boxes.tolist()]
        cells = {(int(x // 8), int(y // 8)) for x, y in centres}
        assert len(cells) == len(centres)  # a stride-8 detector sees one object per cell
        for i, a in enumerate(centres):
            assert all(math.dist(a, b) >= 12 for b in centres[i + 1:])
    assert 9 <= min(sides) and max(sides) <= 34


def test_digits_can_join_the_shapes():
    images, objects, masks = scenes.generate(12, 64, seed=2, shapes=("circle", "7"))
    classes = {int(c) for boxes in objects for c in boxes[:, 0]}
    assert classes == {0, 1}
    with pytest.raises(ValueError, match="shapes"):
        scenes.generate(1, 64, shapes=("hexagon",))


# ---------------------------------------------------------------------------------------------- yolo:

def test_yolo_round_trip(written):
    images, objects, _ = written["scenes"]
    summary = written["summary"][0]
    data = sources.load(data_cfg(source=f"yolo:{written['detect']}", channels=3))
    assert data.task == "detect" and data.files and data.class_names == ["circle", "square", "triangle"]
    paths, labels = data.splits["all"]
    targets = data.targets["all"]
    assert len(paths) == len(targets) == 24 and labels.dtype == np.int64
    for i, path in enumerate(paths):
        assert np.array_equal(decoded(path), images[i])
        assert targets[i].dtype == np.float32 and targets[i].shape == objects[i].shape
        assert np.abs(targets[i] - objects[i]).max(initial=0) <= 1e-6
        expected = np.bincount(objects[i][:, 0].astype(int), minlength=3).argmax() if len(objects[i]) else 0
        assert labels[i] == expected
    background = sum(len(o) == 0 for o in objects)
    without = summary["without_label_file"]
    assert background >= 2 and 0 < without < background
    assert without == (background + 1) // 2
    assert any(f"{without} images have no label file: background only" in n for n in data.notes), data.notes
    assert any(f"{background - without} image" in n and "empty label file" in n for n in data.notes)


def test_yolo_labels_beside_images_and_dominant_class(tmp_path):
    root = tmp_path / "beside"
    (root / "sub").mkdir(parents=True)
    (root / "classes.txt").write_text("cat\ndog\nbird\n")
    for stem, text in [("a", "1 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n0 0.8 0.8 0.1 0.1\n"),
                       ("b", "2 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.2 0.2\n"),  # a tie: the lowest class
                       ("sub/c", ""), ("sub/d", None)]:
        Image.new("RGB", (20, 10), (9, 9, 9)).save(root / f"{stem}.png")
        if text is not None:
            (root / f"{stem}.txt").write_text(text)
    (root / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    data = sources.load(data_cfg(source=f"yolo:{root}"))
    paths, labels = data.splits["all"]
    assert [p.split("beside/")[1] for p in paths] == ["a.png", "b.png", "sub/c.png", "sub/d.png"]
    assert labels.tolist() == [1, 0, 0, 0]
    assert data.targets["all"][0][:, 0].tolist() == [1, 1, 0]
    assert [len(t) for t in data.targets["all"]] == [3, 2, 0, 0]
    notes = " | ".join(data.notes)
    assert "1 image has no label file: background only" in notes
    assert "1 image has an empty label file" in notes and "1 label file has no image; ignored" in notes


def test_yolo_split_folders(tmp_path, written):
    split_root = tmp_path / "splits"  # <dir>/{train,val}/images + labels
    for split, start, stop in (("train", 0, 16), ("val", 16, 24)):
        for sub in ("images", "labels"):
            (split_root / split / sub).mkdir(parents=True)
        for i in range(start, stop):
            stem = f"scene_{i:05d}"
            shutil.copy(written["detect"] / "images" / f"{stem}.png", split_root / split / "images")
            label = written["detect"] / "labels" / f"{stem}.txt"
            if label.exists():
                shutil.copy(label, split_root / split / "labels")
    shutil.copy(written["detect"] / "classes.txt", split_root)
    ultra = tmp_path / "ultra"  # Ultralytics' own: images/{train,val} + labels/{train,val}
    for sub in ("images", "labels"):
        for split in ("train", "val"):
            shutil.copytree(split_root / split / sub, ultra / sub / split)
    shutil.copy(written["detect"] / "classes.txt", ultra)
    _, objects, _ = written["scenes"]
    for root in (split_root, ultra):
        data = sources.load(data_cfg(source=f"yolo:{root}"))
        assert sorted(data.splits) == ["train", "val"] and sorted(data.targets) == ["train", "val"]
        assert len(data.splits["train"][0]) == 16 and len(data.splits["val"][0]) == 8
        assert "16 train, 8 val" in data.origin
        for i, boxes in enumerate(data.targets["val"]):
            assert np.abs(boxes - objects[16 + i]).max(initial=0) <= 1e-6


BAD_LABELS = [
    ("0 0.5 0.5 0.2\n", "labels/scene_00001.txt line 2: malformed line '0 0.5 0.5 0.2': expected 5 numbers"),
    ("0 0.5 zero 0.2 0.2\n", "line 2: malformed line"),
    ("0 0.1 0.2 0.3 0.4 0.5 0.6 0.7\n", "(polygon labels are not supported)"),
    ("7 0.5 0.5 0.2 0.2\n", "labels/scene_00001.txt line 2: unknown class id 7 (classes.txt names 3)"),
    ("-1 0.5 0.5 0.2 0.2\n", "line 2: unknown class id -1 (classes.txt names 3)"),
    ("1.5 0.5 0.5 0.2 0.2\n", "line 2: class id '1.5' is not an integer"),
    ("0 1.2 0.5 0.2 0.2\n", "line 2: cx 1.2 outside [0, 1]"),
    ("0 0.5 nan 0.2 0.2\n", "line 2: cy nan outside [0, 1]"),
    ("0 0.5 0.5 0 0.2\n", "line 2: w 0 not in (0, 1]"),
    ("0 0.5 0.5 0.2 1.5\n", "line 2: h 1.5 not in (0, 1]"),
    ("0 0.95 0.5 0.2 0.2\n", "labels/scene_00001.txt line 2: box outside the image (x 0.8500..1.0500"),
]


@pytest.mark.parametrize("line,needle", BAD_LABELS)
def test_yolo_bad_label_line(tmp_path, written, line, needle):
    root = fresh_copy(written["detect"], tmp_path / "bad")
    (root / "labels" / "scene_00001.txt").write_text("1 0.5 0.5 0.25 0.25\n" + line)
    with pytest.raises(PipelineError) as info:
        sources.load(data_cfg(source=f"yolo:{root}"))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"data.source yolo:{root}: ") and needle in message


def test_yolo_box_within_tolerance_is_kept(tmp_path, written):
    root = fresh_copy(written["detect"], tmp_path / "edge")
    (root / "labels" / "scene_00001.txt").write_text("0 0.9004 0.5 0.2 0.2\n")  # reaches 1.0004
    data = sources.load(data_cfg(source=f"yolo:{root}"))
    assert data.targets["all"][1].tolist() == [[0, pytest.approx(0.9004), 0.5, pytest.approx(0.2),
                                                pytest.approx(0.2)]]


def test_yolo_bad_source_is_one_line_and_writes_nothing(tmp_path, workdir, written):
    root = fresh_copy(written["detect"], tmp_path / "noclasses")
    (root / "classes.txt").unlink()
    with pytest.raises(PipelineError, match=r"yolo:.*: no classes.txt \(one class name per line"):
        sources.load(data_cfg(source=f"yolo:{root}"))
    (root / "classes.txt").write_text("circle\nsquare\ntriangle\n")
    (root / "labels" / "scene_00002.txt").write_text("9 0.5 0.5 0.2 0.2\n")
    result = invoke(["ingest", "--run", "bad", "--set", f"data.source=yolo:{root}",
                     "--set", "data.channels=3"])
    one_line_error(result, 1, "labels/scene_00002.txt line 1: unknown class id 9 (classes.txt names 3)")
    nothing_written(workdir / "runs" / "bad" / "data")
    result = invoke(["ingest", "--run", "pad", "--set", f"data.source=yolo:{root}",
                     "--set", "data.resize=pad"])
    one_line_error(result, 2, "data.resize: pad keeps no box or mask in place")
    nothing_written(workdir / "runs" / "pad" / "data")


# --------------------------------------------------------------------------------------------- masks:

def test_masks_round_trip_and_nearest_resize(written):
    images, _, masks = written["scenes"]
    data = sources.load(data_cfg(source=f"masks:{written['segment']}", channels=3))
    assert data.task == "segment" and data.files
    assert data.class_names == ["background", "circle", "square", "triangle"]
    assert data.encoding == {"kind": "segment", "palette": [list(c) for c in scenes.PALETTE[:4]]}
    paths, labels = data.splits["all"]
    for i, path in enumerate(paths):
        assert np.array_equal(decoded(path), images[i])
        target = data.targets["all"][i]
        assert target.dtype == np.uint8 and np.array_equal(target, masks[i])
        fg = masks[i][masks[i] > 0]
        assert labels[i] == (np.bincount(fg, minlength=4).argmax() if fg.size else 0)
    small = sources.load(data_cfg(source=f"masks:{written['segment']}", image_size=[40, 24]))
    for i, target in enumerate(small.targets["all"]):
        expected = np.asarray(Image.fromarray(masks[i]).resize((24, 40), Image.Resampling.NEAREST))
        assert target.shape == (40, 24) and np.array_equal(target, expected)
        assert set(np.unique(target)) <= set(np.unique(masks[i]))  # never a blended index


def test_masks_without_classes_file_and_split_folders(tmp_path):
    root = tmp_path / "seg"
    for split, n in (("train", 3), ("test", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        for i in range(n):
            Image.new("L", (8, 6), 100).save(root / split / "images" / f"{i}.jpg")
            mask = np.zeros((6, 8), np.uint8)
            mask[:2, :3] = 2
            mask[4:, :] = i  # image 0: background + class 2 only; others: more of class i
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    data = sources.load(data_cfg(source=f"masks:{root}"))
    assert data.class_names == ["background", "class1", "class2"] and data.encoding is None
    assert sorted(data.splits) == ["test", "train"]
    assert data.splits["train"][1].tolist() == [2, 1, 2]  # 6 of class 2 vs 16 of class 1 vs 16 of class 2
    assert data.splits["test"][1].tolist() == [2, 1]
    assert any("no classes.txt" in n for n in data.notes)


def make_masks(root, mask=None, mode="L", classes="background #000000\nthing #ff0000\nother #00ff00\n"):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.new("RGB", (64, 64), (50, 60, 70)).save(root / "images" / "a.png")
    Image.new("RGB", (64, 64), (50, 60, 70)).save(root / "images" / "b.jpg")
    ok = np.zeros((64, 64), np.uint8)
    ok[10:20, 10:20] = 1
    Image.fromarray(ok).save(root / "masks" / "a.png")
    bad = Image.fromarray(ok if mask is None else mask)
    (bad.convert(mode) if mode != "L" else bad).save(root / "masks" / "b.png")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


BAD_MASKS = [
    (lambda r: make_masks(r, np.zeros((48, 64), np.uint8)), "masks/b.png: mask 64x48, image 64x64"),
    (lambda r: make_masks(r, np.full((64, 64), 9, np.uint8)),
     "masks/b.png: class index 9 out of range (classes.txt names 3)"),
    (lambda r: make_masks(r, mode="RGB"), "masks/b.png is a RGB image; a mask is a single-channel PNG"),
    (lambda r: (make_masks(r), (r / "masks" / "b.png").unlink()), "images/b.jpg has no mask (expected "
                                                                  "masks/b.png)"),
    (lambda r: (make_masks(r), (r / "images" / "a.png").unlink()), "masks/a.png has no image in images/"),
    (lambda r: make_masks(r, classes="background #000000\nthing #ff0000\nother\n"),
     "classes.txt line 3: no #rrggbb colour while other lines give one"),
    (lambda r: (make_masks(r), shutil.rmtree(r / "masks")), "no masks/ folder beside images/"),
]


@pytest.mark.parametrize("build,needle", BAD_MASKS)
def test_masks_bad_input(tmp_path, build, needle):
    root = tmp_path / "bad"
    build(root)
    with pytest.raises(PipelineError) as info:
        sources.load(data_cfg(source=f"masks:{root}"))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"data.source masks:{root}") and needle in message


def test_masks_palette_mode_uses_indices_and_bad_mask_writes_nothing(tmp_path, workdir):
    mask = np.zeros((64, 64), np.uint8)
    mask[30:, :] = 2
    root = make_masks(tmp_path / "p", mask, classes=None)
    pil = Image.frombytes("P", (64, 64), mask.tobytes())
    pil.putpalette([0, 0, 0, 255, 255, 255, 7, 7, 7])  # colours unrelated to the indices
    pil.save(root / "masks" / "b.png")
    data = sources.load(data_cfg(source=f"masks:{root}"))
    assert data.class_names == ["background", "class1", "class2"]
    assert np.array_equal(data.targets["all"][1], mask) and data.splits["all"][1].tolist() == [1, 2]
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(root / "masks" / "b.png")
    result = invoke(["ingest", "--run", "bad", "--set", f"data.source=masks:{root}"])
    one_line_error(result, 1, "masks/b.png: mask 64x32, image 64x64")
    nothing_written(workdir / "runs" / "bad" / "data")


# -------------------------------------------------------------------------------------------- scenes:

def test_scenes_source_in_memory():
    data = sources.load(data_cfg(source="scenes:detect,n=12,size=48,seed=3", channels=1))
    images, labels = data.splits["all"]
    assert images.shape == (12, 48, 48, 1) and images.dtype == np.uint8 and not data.files
    assert data.task == "detect" and data.class_names == ["circle", "square", "triangle"]
    _, objects, masks = scenes.generate(12, 48, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(data.targets["all"], objects))
    assert "generated scenes (detect: 12 48x48 images" in data.origin
    seg = sources.load(data_cfg(source="scenes:segment,n=6", image_size=[40, 56], channels=3))
    assert seg.splits["all"][0].shape == (6, 40, 56, 3)
    assert seg.targets["all"].dtype == object and seg.targets["all"][0].shape == (40, 56)
    assert seg.class_names[0] == "background"
    mask = seg.targets["all"][0]
    fg = mask[mask > 0]
    assert seg.splits["all"][1][0] == (np.bincount(fg).argmax() if fg.size else 0)
    ident = sources.identity(data_cfg(source="scenes:detect,n=12"))
    assert ident["source"]["scenes"] == "detect,n=12"


@pytest.mark.parametrize("source,needle", [
    ("scenes", "data.source: scenes: needs an argument, e.g. scenes:detect or scenes:segment"),
    ("scenes:classify", "scenes: needs detect or segment"),
    ("scenes:detect,width=3", "unknown option 'width=3' (use n=, size=, seed=, objects=)"),
    ("scenes:segment,n=0", "n='0': expected an integer 1..200000"),
    ("scenes:detect,size=big", "size='big': expected an integer 32..1024"),
    ("nosuch:x", "yolo:<dir>, masks:<dir> or scenes:detect|segment"),
])
def test_scenes_source_argument_errors(source, needle):
    with pytest.raises(ConfigError) as info:
        config.from_dict({"data": {"source": source}})
    assert needle in str(info.value)


def test_scenes_source_config_conflicts():
    with pytest.raises(ConfigError, match="size=64 differs from data.image_size"):
        sources.load(data_cfg(source="scenes:detect,n=2,size=64", image_size=[48, 48]))
    with pytest.raises(ConfigError, match="data.resize: pad keeps no box or mask in place"):
        sources.load(data_cfg(source="scenes:segment,n=2", resize="pad"))


# ------------------------------------------------------------------------------------- cnnpipe scenes

def test_cli_scenes_writes_readable_datasets(workdir):
    result = invoke(["scenes", "--task", "detect", "--out", "det", "--n", "8", "--size", "48", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "wrote det: 8 48x48 images (detect)" in result.output
    assert "use it with: --set data.source=yolo:det" in result.output
    assert len(list((workdir / "det" / "images").glob("*.png"))) == 8
    data = sources.load(data_cfg(source="yolo:det"))
    _, objects, _ = scenes.generate(8, 48, seed=5)
    assert all(np.abs(a - b).max(initial=0) <= 1e-6 for a, b in zip(data.targets["all"], objects))
    result = invoke(["scenes", "--task", "segment", "--out", "seg", "--n", "4", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert "use it with: --set data.source=masks:seg" in result.output
    seg = sources.load(data_cfg(source="masks:seg"))
    assert np.array_equal(np.stack(list(seg.targets["all"])), scenes.generate(4, 48)[2])
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_cli_scenes_refuses_a_non_empty_folder(workdir):
    (workdir / "busy").mkdir()
    (workdir / "busy" / "keep.txt").write_text("mine")
    result = invoke(["scenes", "--task", "detect", "--out", "busy", "--n", "3"])
    one_line_error(result, 2, "--out busy: is a folder that is not empty; choose a new folder "
                              "(nothing written)")
    assert [p.name for p in (workdir / "busy").iterdir()] == ["keep.txt"]
    (workdir / "file").write_text("x")
    one_line_error(invoke(["scenes", "--task", "segment", "--out", "file", "--n", "3"]), 2, "is a file")
    assert sorted(p.name for p in workdir.iterdir()) == ["busy", "file"]
    (workdir / "empty").mkdir()
    result = invoke(["scenes", "--task", "segment", "--out", "empty", "--n", "2", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (workdir / "empty").iterdir()) == ["classes.txt", "images", "masks"]
