"""The keyword dataset spoken by espeak-ng, and configs/keywords.yaml end to end on a tiny version of it: the
DS-CNN exported to int8, TFLM equal to LiteRT on the golden vectors, and the bundle's predict.py labelling
.wav clips in a process that cannot import TensorFlow."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke, tensorflow_free_env
from pipeline import audio, keywords

ROOT = Path(__file__).resolve().parents[1]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


@needs_espeak
def test_generator_writes_seeded_16k_mono_clips(tmp_path):
    counts = keywords.generate(tmp_path / "a", 2, seed=5)
    assert counts == {name: 2 for name in keywords.classes()} and len(counts) == 12
    clips = sorted((tmp_path / "a").rglob("*.wav"))
    assert len(clips) == 24
    for clip in clips:
        with wave.open(str(clip)) as w:
            got = (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes())
            assert got == (16000, 1, 2, 16000)
    keywords.generate(tmp_path / "b", 2, seed=5)
    assert all(c.read_bytes() == (tmp_path / "b" / c.relative_to(tmp_path / "a")).read_bytes() for c in clips)
    s = audio.settings({})

    def rise(path):  # loudest frame above the median frame, in pixels (0.39 dB each)
        frame = audio.load_features(path, s)[..., 0].astype(float).mean(axis=1)
        return frame.max() - np.median(frame)
    spoken = keywords.KEYWORDS + (keywords.UNKNOWN,)
    words = [rise(p) for name in spoken for p in (tmp_path / "a" / name).glob("*")]
    quiet = [rise(p) for p in (tmp_path / "a" / keywords.SILENCE).glob("*.wav")]
    assert min(words) > 10 and max(quiet) < 6, (words, quiet)          # a word rises out of steady noise


def test_generator_without_espeak_is_one_line(workdir, monkeypatch):
    monkeypatch.setattr(keywords.shutil, "which", lambda name: None)
    from click.testing import CliRunner

    from tasks.keywords import main

    result = CliRunner().invoke(main, [str(workdir / "kw"), "--per-class", "1"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: espeak-ng not found: install it (apt-get install espeak-ng, or `make keywords` as root)"]
    assert not (workdir / "kw").exists()


@needs_espeak
@pytest.mark.slow  # about 2 minutes: speaking 172 clips, training the DS-CNN, export with TFLM
def test_keywords_config_end_to_end_and_predict_wav_without_tensorflow(workdir):
    kept = ("yes", "no", "stop", keywords.SILENCE)                      # four classes keep the run short
    for folder, n, seed in ((workdir / "kw", 40, 1), (workdir / "fresh", 3, 99)):   # fresh: never seen
        keywords.generate(folder, n, seed=seed)
        for other in set(keywords.classes()) - set(kept):
            shutil.rmtree(folder / other)
    fresh = workdir / "fresh"
    # ~6 test clips a class: one changed label moves a class by 17 points, so the gate is wide here
    result = invoke(["run", "--config", ROOT / "configs" / "keywords.yaml", "--run", "kw",
                     "--set", "data.source=audio:kw", "--set", "train.epochs=40", "--set", "train.verbose=0",
                     "--set", "train.patience=40", "--set", "train.batch_size=16",
                     "--set", "data.test_fraction=0.15", "--set", "model.width=0.5",
                     "--set", "export.representative_samples=100", "--set", "export.golden_vectors=6",
                     "--set", "export.max_accuracy_drop=10", "--set", "export.max_class_drop=100"])
    assert result.exit_code == 0, result.output
    bundle = workdir / "exported" / "kw"
    card = json.loads((bundle / "model_card.json").read_text())
    assert card["input"]["shape"] == [1, 49, 40, 1] and card["input"]["encoding"]["kind"] == "audio"
    assert card["input"]["encoding"]["sample_rate"] == 16000 and card["input"]["encoding"]["mels"] == 40
    assert card["micro"]["tflm_matches_litert"] is True and card["micro"]["golden_vectors"] == 6
    assert card["files"]["int8"]["parity"]["accuracy"] > 0.6            # chance is 1/4
    clips = sorted(fresh.rglob("*.wav"))
    stereo = workdir / "stereo.wav"                                      # a stereo copy of the first clip
    with wave.open(str(clips[0])) as w:
        mono = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.repeat(mono, 2).tobytes())
    done = subprocess.run([sys.executable, "predict.py", "--json", *map(str, clips), str(stereo)], cwd=bundle,
                          env=tensorflow_free_env(workdir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    rows = json.loads(done.stdout)
    truth = [c.parent.name for c in clips]
    right = sum(r["top"][0]["label"] == t for r, t in zip(rows, truth))
    assert right >= len(clips) // 2, (right, len(clips))                  # 12 fresh clips, chance 3
    assert rows[-1]["top"] == rows[0]["top"]                             # stereo mixed to mono: same scores
    from pipeline import edge

    model = edge.EdgeModel(bundle / "model_int8.tflite")
    s = audio.settings({})
    expected = [model.predict(audio.load_features(c, s))[0] for c in clips[:6]]
    scores = [r["top"][0]["score"] for r in rows[:6]]
    assert scores == pytest.approx([float(e.max()) for e in expected], abs=1e-6)
    cd = workdir / "cd.wav"                                              # another sample rate: refused
    with wave.open(str(cd), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(44100)
        w.writeframes(np.zeros(44100, "<i2").tobytes())
    done = subprocess.run([sys.executable, "predict.py", str(clips[0]), str(cd)], cwd=bundle,
                          env=tensorflow_free_env(workdir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout.startswith(f"{clips[0]}: ")
    assert done.stderr.strip() == (f"error: {cd}: cannot read audio (sample rate 44100 Hz, the model takes "
                                   "16000 Hz; resample it first (e.g. sox in.wav -r 16000 out.wav))")
