"""The transfer-learning entry of ``make benchmark``: Fashion-MNIST classes 0-4 -> 5-9, the protocol of
``tests/test_transfer.py`` (8x8 digits, where transfer does not win) on images where learned features matter.

1. Base: the ``small`` preset (``filters [16, 32]``, ``dense [64]``) trained on all 30,000 training images of
   classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat; 10% of them held out for validation) for
   ``BASE_EPOCHS`` epochs, evaluated on their 5,000 test images. Its data is a small IDX folder (the format of
   ``idx:`` sources) written under the work dir.
2. Target: classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) from a ``folder:`` source with its own
   splits: the first 10 training images of each class for training, the next 10 for validation (best-val-loss
   weights are kept, in both arms), and all 5,000 test images of 5-9 for test.
3. Per seed (model initialization and shuffling): ``transfer``, the base cut before its dense head
   (``model.base_model``) under a new class layer, head ``HEAD_EPOCHS`` epochs at ``HEAD_LR`` with the base
   frozen, then ``FINETUNE_EPOCHS`` at ``FINETUNE_LR`` with the whole base unfrozen (batch norm frozen); and
   ``scratch``, the same architecture trained from random weights for as many epochs in total
   (``HEAD_EPOCHS + FINETUNE_EPOCHS``) at the default 0.003. No augmentation in either arm; batch 16.

Every model is trained and evaluated by ``cnnpipe run --until evaluate`` in a subprocess. For reference, the
entry also reports 1-nearest-neighbour on the raw 784 pixels of the same 50 training images.

Measured (benchmarks/README.md, 2 loaded cores, about 6 minutes): transfer 88.78 / 90.00 / 89.36% (mean
89.38%), scratch 88.34 / 85.38 / 87.64% (mean 87.12%), base 93.42% on 0-4, 1-NN 81.52%.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"]
BASE_CLASSES, TARGET_CLASSES = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
PER_CLASS_TRAIN, PER_CLASS_VAL = 10, 10
SEEDS = (1, 2, 3)
ARCH = ("model.preset=small", "model.filters=[16, 32]", "model.dense=[64]", "train.warmup_epochs=0",
        "train.patience=1000", "train.verbose=2", "data.dedupe=false")
BASE_EPOCHS, BASE_BATCH = 8, 64
HEAD_EPOCHS, HEAD_LR, FINETUNE_EPOCHS, FINETUNE_LR = 30, 0.01, 20, 0.003
SCRATCH_LR = 0.003
TRANSFER = ("model.base_model=base", f"train.epochs={HEAD_EPOCHS}", f"train.learning_rate={HEAD_LR}",
            f"train.finetune_epochs={FINETUNE_EPOCHS}", f"train.finetune_lr={FINETUNE_LR}")
SCRATCH = (f"train.epochs={HEAD_EPOCHS + FINETUNE_EPOCHS}", f"train.learning_rate={SCRATCH_LR}")


def _sets(items) -> list:
    return [arg for item in items for arg in ("--set", item)]


def _fashion():
    from pipeline.sources.idx import read_idx

    return {split: (read_idx(SOURCE / f"{prefix}-images-idx3-ubyte.gz", 3),
                    read_idx(SOURCE / f"{prefix}-labels-idx1-ubyte.gz", 1).astype(np.int64))
            for split, prefix in (("train", "train"), ("test", "t10k"))}


def _write_idx(path: Path, array: np.ndarray) -> None:
    """One raw IDX file of uint8 values: magic 0x0000080<ndim>, the dimensions as big-endian int32."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def base_idx(root: Path, fashion: dict) -> Path:
    """``root`` as an ``idx:`` folder of classes 0-4: all their training and test images, ``classes.txt``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = fashion[split]
        keep = np.isin(y, BASE_CLASSES)
        _write_idx(root / f"{prefix}-images-idx3-ubyte", x[keep])
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", y[keep])
    (root / "classes.txt").write_text("".join(NAMES[c] + "\n" for c in BASE_CLASSES))
    return root


def target_folder(root: Path, fashion: dict) -> tuple[Path, dict]:
    """``root/{train,val,test}/<class>/*.png`` of classes 5-9: the first ``PER_CLASS_TRAIN`` training images
    of each class, the next ``PER_CLASS_VAL`` for validation, all test images; and the arrays written."""
    from PIL import Image

    x_train, y_train = fashion["train"]
    x_test, y_test = fashion["test"]
    a, b = PER_CLASS_TRAIN, PER_CLASS_TRAIN + PER_CLASS_VAL
    chosen = {"train": {}, "val": {}, "test": {}}
    for c in TARGET_CLASSES:
        idx = np.flatnonzero(y_train == c)
        chosen["train"][c], chosen["val"][c] = idx[:a], idx[a:b]
        chosen["test"][c] = np.flatnonzero(y_test == c)
    arrays = {}
    for split, per_class in chosen.items():
        images = x_test if split == "test" else x_train
        for c, ids in per_class.items():
            folder = root / split / NAMES[c].replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i in ids:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
        order = np.concatenate(list(per_class.values()))
        labels = np.concatenate([np.full(len(ids), c) for c, ids in per_class.items()])
        arrays[split] = (images[order], labels)
    return root, arrays


def nearest_neighbour(arrays: dict) -> float:
    """Test accuracy of 1-NN (Euclidean) on raw pixels, from the training images alone."""
    train = arrays["train"][0].reshape(len(arrays["train"][0]), -1).astype(np.float32)
    test = arrays["test"][0].reshape(len(arrays["test"][0]), -1).astype(np.float32)
    d = (test ** 2).sum(1)[:, None] - 2 * test @ train.T + (train ** 2).sum(1)[None, :]
    return round(float(np.mean(arrays["train"][1][d.argmin(1)] == arrays["test"][1])), 6)


def _result(work: Path, run: str) -> dict:
    runs = work / "runs" / run
    metrics = json.loads((runs / "eval" / "metrics.json").read_text())
    train = json.loads((runs / "train" / "manifest.json").read_text())["summary"]
    return {"accuracy": metrics["accuracy"], "n_test": metrics["n_test"], "epochs_run": train["epochs_run"],
            "best_epoch": train["best_epoch"]}


def run(work: Path, repo: Path, cnnpipe) -> dict:
    """Train the base, then transfer and scratch per seed; their test accuracies and settings."""
    cfg = repo / "configs" / "default.yaml"
    work = Path(work) / "transfer"
    fashion = _fashion()
    base_dir = base_idx(work / "data" / "fashion_0_4", fashion)
    target_dir, arrays = target_folder(work / "data" / "fashion_5_9_10shot", fashion)
    out = {"protocol": {
        "base": f"classes 0-4, all {int(np.isin(fashion['train'][1], BASE_CLASSES).sum())} training images "
                f"(10% validation), {BASE_EPOCHS} epochs, batch {BASE_BATCH}, lr 0.003 cosine",
        "target": f"classes 5-9, {PER_CLASS_TRAIN} training + {PER_CLASS_VAL} validation images per class "
                  f"(the first of each class), all {len(arrays['test'][1])} test images; batch 16",
        "transfer": f"head {HEAD_EPOCHS} epochs at {HEAD_LR} (base frozen), then fine-tuning "
                    f"{FINETUNE_EPOCHS} epochs at {FINETUNE_LR} (whole base, batch norm frozen)",
        "scratch": f"{HEAD_EPOCHS + FINETUNE_EPOCHS} epochs at {SCRATCH_LR}",
        "model": "small preset, filters [16, 32], dense [64], no augmentation", "seeds": list(SEEDS)}}
    base_sets = _sets((f"data.source=idx:{base_dir}", *ARCH, f"train.epochs={BASE_EPOCHS}",
                       f"train.batch_size={BASE_BATCH}"))
    seconds = cnnpipe(["run", "--until", "evaluate", "--config", cfg, "--run", "base", *base_sets], work)
    out["base"] = {**_result(work, "base"), "wall_seconds": seconds}
    few = (f"data.source=folder:{target_dir}", *ARCH, "train.batch_size=16")
    seeds_out = []
    for seed in SEEDS:
        row = {"seed": seed}
        for kind, extra in (("transfer", TRANSFER), ("scratch", SCRATCH)):
            name = f"{kind}{seed}"
            sets = _sets((*few, f"model.seed={seed}", f"train.seed={seed}", *extra))
            seconds = cnnpipe(["run", "--until", "evaluate", "--config", cfg, "--run", name, *sets], work)
            result = _result(work, name)
            row[f"{kind}_accuracy"] = result["accuracy"]
            row[f"{kind}_best_epoch"] = result["best_epoch"]
            row[f"{kind}_seconds"] = seconds
            row["n_test"] = result["n_test"]
        row["base_accuracy_0_4"] = out["base"]["accuracy"]
        seeds_out.append(row)
    out["seeds"] = seeds_out
    out["mean"] = {k: round(float(np.mean([r[k] for r in seeds_out])), 6)
                   for k in ("transfer_accuracy", "scratch_accuracy")}
    out["mean"]["transfer_minus_scratch_points"] = round(
        100 * (out["mean"]["transfer_accuracy"] - out["mean"]["scratch_accuracy"]), 2)
    out["nearest_neighbour_raw_pixels"] = nearest_neighbour(arrays)
    return out


def table(result: dict) -> str:
    rows = ["seed  transfer  scratch  base 0-4"]
    for r in result["seeds"]:
        rows.append(f"{r['seed']:<5} {100 * r['transfer_accuracy']:7.2f}%  "
                    f"{100 * r['scratch_accuracy']:6.2f}%  {100 * r['base_accuracy_0_4']:7.2f}%")
    m = result["mean"]
    rows.append(f"mean  {100 * m['transfer_accuracy']:7.2f}%  {100 * m['scratch_accuracy']:6.2f}%")
    rows.append(f"1-NN on raw pixels of the 50 images: {100 * result['nearest_neighbour_raw_pixels']:.2f}%")
    return "\n".join(rows)
