"""The audio front end (pipeline/audio.py), the audio:<dir> source and its bad inputs, and the spectrogram
augmentations. Clips are numpy tones written with the wave module: no espeak-ng needed here."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from conftest import invoke
from pipeline import audio, config, sources

RATE = 16000


def write_wav(path, x, rate=RATE, width=2, channels=1):
    """x: float [n] or [n, channels] in [-1, 1] as PCM of ``width`` bytes."""
    x = np.asarray(x, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    if width == 1:
        raw = np.clip(np.rint(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 3:
        v = np.clip(np.rint(x * (2 ** 23 - 1)), -2 ** 23, 2 ** 23 - 1).astype(np.int32).reshape(-1)
        raw = np.stack([v & 255, (v >> 8) & 255, (v >> 16) & 255], axis=1).astype(np.uint8).tobytes()
    else:
        top = 2 ** (8 * width - 1)
        raw = np.clip(np.rint(x * (top - 1)), -top, top - 1).astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def tone(freq, seconds=1.0, level=0.5, rate=RATE, noise=0.0, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return level * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(len(t))


def errors_of(result) -> list:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# ---- the front end -----------------------------------------------------------------------------------------
def test_front_end_shape_band_and_levels():
    s = audio.settings({})
    assert audio.shape(s) == (49, 40, 1) and audio.fft_size(s) == 1024
    img = audio.features(tone(1000.0, level=1.0), s)
    assert img.shape == (49, 40, 1) and img.dtype == np.uint8
    centres = audio._mel_to_hz(np.linspace(audio._hz_to_mel(20), audio._hz_to_mel(7600), 42))[1:-1]
    loudest = int(np.argmax(img[10, :, 0]))
    assert loudest == int(np.argmin(np.abs(centres - 1000.0))) and 900 < centres[loudest] < 1100
    peak_db = int(img.max()) * 100 / 255 - 100
    assert -8 < peak_db < 0                                             # a full-scale sine peaks near 0 dB
    assert audio.features(np.zeros(RATE), s).max() == 0                 # silence is the floor
    quiet = audio.features(tone(1000.0, level=0.01), s)
    assert abs((int(img.max()) - int(quiet.max())) * 100 / 255 - 40) < 1.0  # 40 dB quieter, 40 dB lower


def test_short_clips_are_padded_and_long_ones_cut():
    s = audio.settings({})
    short = audio.features(tone(500.0, seconds=0.5), s)
    assert short[:20].max() > 150 and short[-20:].max() == 0
    long = audio.features(tone(500.0, seconds=2.0), s)
    assert np.array_equal(long, audio.features(tone(500.0, seconds=1.0), s))


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_sample_widths_read_the_same_signal(tmp_path, width):
    x = tone(440.0, level=0.5)
    read, rate = audio.read_wav(write_wav(tmp_path / "a.wav", x, width=width))
    assert rate == RATE and len(read) == RATE
    assert np.abs(read - x).max() < (0.02 if width == 1 else 1e-4)


def test_stereo_is_mixed_to_mono(tmp_path):
    x = tone(440.0)
    same, _ = audio.read_wav(write_wav(tmp_path / "same.wav", np.stack([x, x], 1)))
    assert np.abs(same - x).max() < 1e-4
    opposite, _ = audio.read_wav(write_wav(tmp_path / "opp.wav", np.stack([x, -x], 1)))
    assert np.abs(opposite).max() < 1e-4


def test_other_sample_rate_is_refused(tmp_path):
    path = write_wav(tmp_path / "cd.wav", tone(440.0, rate=44100), rate=44100)
    with pytest.raises(ValueError, match=r"sample rate 44100 Hz, the model takes 16000 Hz; resample it"):
        audio.load_features(path, audio.settings({}))


@pytest.mark.parametrize("given, needle", [
    ({"mel": 40}, "data.audio.mel: unknown key (known: sample_rate, clip_seconds"),
    ({"mels": 0}, "data.audio.mels: 0 is outside 1..256"),
    ({"mels": 4.5}, "data.audio.mels: expected an integer, got 4.5"),
    ({"fmax": 9000}, "data.audio: needs fmin < fmax <= sample_rate / 2"),
    ({"window_ms": 900, "clip_seconds": 0.5}, "data.audio: window_ms 900.0 is longer than the clip"),
])
def test_bad_audio_settings_are_one_line_exit_2(workdir, given, needle):
    text = "{" + ", ".join(f"{k}: {v}" for k, v in given.items()) + "}"
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=audio:clips",
                     "--set", f"data.audio={text}"])
    assert result.exit_code == 2, result.output
    errors = errors_of(result)
    assert len(errors) == 1 and needle in errors[0], result.output
    assert not (workdir / "runs" / "bad" / "data" / "classes.json").exists()


# ---- the audio:<dir> source --------------------------------------------------------------------------------
def tone_folder(root, n=12):
    """Two classes: low (300-500 Hz) and high (2-3 kHz) tones in noise."""
    rng = np.random.default_rng(0)
    for i in range(n):
        write_wav(root / "low" / f"{i:03d}.wav", tone(rng.uniform(300, 500), noise=0.02, seed=i))
        write_wav(root / "high" / f"{i:03d}.wav", tone(rng.uniform(2000, 3000), noise=0.02, seed=100 + i))
    return root


def test_audio_ingest_lists_bad_clips_and_keeps_stereo(workdir):
    root = tone_folder(workdir / "clips")
    write_wav(root / "low" / "stereo.wav", np.stack([tone(400.0), tone(400.0)], 1))
    (root / "low" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "high" / "empty.wav").write_bytes(b"")
    write_wav(root / "high" / "cd.wav", tone(2500.0, rate=44100), rate=44100)
    (root / "high" / "notes.txt").write_text("not audio")
    result = invoke(["ingest", "--run", "a", "--set", "data.source=audio:clips"])
    assert result.exit_code == 0, result.output
    data_dir = workdir / "runs" / "a" / "data"
    meta = json.loads((data_dir / "classes.json").read_text())
    assert meta["class_names"] == ["high", "low"] and meta["image_shape"] == [49, 40, 1]
    assert sum(meta["counts"].values()) == 25                           # 24 tones + the stereo clip
    enc = meta["encoding"]
    assert enc["kind"] == "audio" and enc["mels"] == 40 and enc["frames"] == 49
    assert enc["db_range"] == [-100, 0]
    skipped = {s["path"].rsplit("/", 1)[-1]: s["reason"]
               for s in json.loads((data_dir / "preflight.json").read_text())["skipped"]["files"]}
    assert set(skipped) == {"corrupt.wav", "empty.wav", "cd.wav"}, skipped
    assert skipped["empty.wav"] == "empty file (0 bytes)"
    assert "not a PCM .wav file" in skipped["corrupt.wav"]
    assert "sample rate 44100 Hz, the model takes 16000 Hz" in skipped["cd.wav"]


def test_a_class_without_usable_clips_is_one_line(workdir):
    root = tone_folder(workdir / "clips", 3)
    for i in range(3):
        write_wav(root / "high" / f"{i:03d}.wav", tone(2500.0, rate=8000), rate=8000)
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=audio:clips"])
    assert result.exit_code == 1, result.output
    assert errors_of(result) == [
        "error: data.source audio:clips: no clip of class 'high' could be used (e.g. clips/high/000.wav: "
        "ValueError: sample rate 8000 Hz, the model takes 16000 Hz; resample it first "
        "(e.g. sox in.wav -r 16000 out.wav)); fix or remove its files"]
    assert not (workdir / "runs" / "bad" / "data" / "classes.json").exists()


def test_audio_source_errors(workdir):
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=audio:nowhere"])
    assert result.exit_code == 1
    assert errors_of(result) == ["error: data.source folder:nowhere: no such directory"]
    write_wav(workdir / "one" / "only" / "a.wav", tone(300.0))
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=audio:one"])
    assert result.exit_code == 1
    assert errors_of(result) == [
        "error: data.source audio:one: needs at least 2 class folders with .wav clips, found 1"]


def test_identity_follows_the_clips(tmp_path):
    root = tone_folder(tmp_path / "clips", 2)
    cfg = config.load(None, [f"data.source=audio:{root}"]).data
    before = sources.identity(cfg)
    write_wav(root / "low" / "new.wav", tone(350.0))
    assert sources.identity(cfg) != before


# ---- augmentation of spectrograms --------------------------------------------------------------------------
def _augment(**keys):
    from pipeline import augment

    cfg = config.load(None, [f"augment.{k}={v}" for k, v in keys.items()]).augment
    return augment.build(cfg, 2, seed=3)


def _batch():
    x = np.zeros((8, 49, 40, 1), np.float32)
    x[:, 20:30, 10:20] = 200.0
    return x, np.eye(2, dtype=np.float32)[[0, 1] * 4]


def test_time_shift_moves_rows_and_fills_silence():
    x, y = _batch()
    out = _augment(time_shift=0.2)(x, y)[0].numpy()
    assert out.shape == x.shape
    rows = [np.flatnonzero(o[:, 15, 0] == 200) for o in out]
    assert all(len(r) == 10 and r[-1] - r[0] == 9 for r in rows)       # the word stays whole
    assert all(abs(r[0] - 20) <= 10 for r in rows) and len({r[0] for r in rows}) > 1
    assert set(np.unique(out)) <= {0.0, 200.0}


def test_noise_only_adds_power():
    x, y = _batch()
    out = _augment(noise=1.0)(x, y)[0].numpy()
    assert (out >= x - 1e-3).all() and out[:, :10].mean() > 10        # silence gets a noise floor
    assert np.abs(out[:, 20:30, 10:20] - 200).max() < 1.0               # a loud part barely changes


def test_spec_augment_masks_whole_rows_and_columns():
    x, y = _batch()
    out = _augment(time_mask=8, freq_mask=8)(x, y)[0].numpy()
    mean = x.mean(axis=(1, 2, 3))
    for o, m in zip(out, mean):
        changed = np.abs(o[..., 0] - x[0, ..., 0]) > 1e-3
        rows = np.flatnonzero(changed.all(axis=1) | np.isclose(o[..., 0], m).all(axis=1))
        cols = np.flatnonzero(changed.all(axis=0) | np.isclose(o[..., 0], m).all(axis=0))
        assert len(rows) <= 8 and len(cols) <= 8
    again = _augment(time_mask=8, freq_mask=8)(x, y)[0].numpy()
    assert np.array_equal(out, again)                                   # seeded
