"""The audio front end: a mono clip -> a uint8 log-mel spectrogram image [frames, mels, 1], numpy only.

Ingest (``audio:<dir>``) and the edge runtime (``cnnpipe predict``, the bundle's ``predict.py``) both call
:func:`load_features`, so a device computes exactly the pixels training saw. The parameters are the
``data.audio`` settings (:data:`DEFAULTS`), recorded in ``classes.json`` and the model card
(``input.encoding``):

1. read a PCM ``.wav`` (8, 16, 24 or 32 bit) with the standard ``wave`` module; several channels are averaged
   to mono; a clip at another sample rate than ``sample_rate`` is refused (resample it first, e.g.
   ``sox in.wav -r 16000 out.wav``): resampling inside would make the device's front end depend on a filter
   the firmware does not have;
2. keep the first ``clip_seconds`` (a shorter clip is padded with silence at the end);
3. frames of ``window_ms`` every ``hop_ms``, a periodic Hann window, power spectrum of an FFT of the next
   power of two, normalized so a full-scale sine peaks near 0 dB;
4. ``mels`` triangular filters (HTK mel scale) from ``fmin`` to ``fmax``;
5. 10 log10 of the band energies, mapped linearly from the fixed range :data:`DB_RANGE` (-100 dB .. 0 dB) to
   0..255 and rounded (0.39 dB per step; quieter bands are 0).

The defaults give 49 frames x 40 bands for 1 s at 16 kHz (40 ms windows every 20 ms, as the MLPerf Tiny
keyword-spotting front end).
"""
from __future__ import annotations

import wave

import numpy as np

DEFAULTS = {"sample_rate": 16000, "clip_seconds": 1.0, "window_ms": 40.0, "hop_ms": 20.0, "mels": 40,
            "fmin": 20.0, "fmax": 7600.0}
DB_RANGE = (-100.0, 0.0)
LIMITS = {"sample_rate": (1000, 192000), "clip_seconds": (0.05, 60.0), "window_ms": (1.0, 1000.0),
          "hop_ms": (1.0, 1000.0), "mels": (1, 256), "fmin": (0.0, 96000.0), "fmax": (1.0, 96000.0)}


def settings(given: dict | None, where: str = "data.audio") -> dict:
    """The front-end parameters: :data:`DEFAULTS` updated with ``given``, every key and value checked
    (ValueError naming the key; :func:`pipeline.sources.audio.settings` makes it a ConfigError)."""
    out = dict(DEFAULTS)
    for key, value in (given or {}).items():
        if key not in DEFAULTS:
            raise ValueError(f"{where}.{key}: unknown key (known: {', '.join(DEFAULTS)})")
        ints = key in ("sample_rate", "mels")
        ok = isinstance(value, int) if ints else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise ValueError(f"{where}.{key}: expected {'an integer' if ints else 'a number'}, got {value!r}")
        lo, hi = LIMITS[key]
        if not lo <= value <= hi:
            raise ValueError(f"{where}.{key}: {value!r} is outside {lo}..{hi}")
        out[key] = int(value) if ints else float(value)
    if out["fmax"] > out["sample_rate"] / 2 or out["fmin"] >= out["fmax"]:
        raise ValueError(f"{where}: needs fmin < fmax <= sample_rate / 2, got fmin {out['fmin']}, "
                         f"fmax {out['fmax']}, sample_rate {out['sample_rate']}")
    if window(out) > samples(out):
        raise ValueError(f"{where}: window_ms {out['window_ms']} is longer than the clip")
    return out


def samples(s: dict) -> int:
    return int(round(s["clip_seconds"] * s["sample_rate"]))


def window(s: dict) -> int:
    return int(round(s["window_ms"] * s["sample_rate"] / 1000.0))


def hop(s: dict) -> int:
    return max(1, int(round(s["hop_ms"] * s["sample_rate"] / 1000.0)))


def frames(s: dict) -> int:
    return 1 + (samples(s) - window(s)) // hop(s)


def shape(s: dict) -> tuple:
    """The spectrogram image's shape [frames, mels, 1]."""
    return (frames(s), int(s["mels"]), 1)


def read_wav(path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """(mono float64 samples in [-1, 1], sample rate) of a PCM .wav; ValueError for what cannot be used."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a PCM .wav file ({exc})") from None
    if sample_rate is not None and rate != sample_rate:
        raise ValueError(f"sample rate {rate} Hz, the model takes {sample_rate} Hz; resample it first "
                         f"(e.g. sox in.wav -r {sample_rate} out.wav)")
    if width not in (1, 2, 3, 4) or channels < 1:
        raise ValueError(f"unsupported sample width of {width} bytes")
    usable = len(raw) - len(raw) % (width * channels)
    if usable == 0:
        raise ValueError("holds no audio samples")
    b = np.frombuffer(raw[:usable], np.uint8)
    if width == 1:
        x = (b.astype(np.float64) - 128.0) / 128.0
    elif width == 3:
        t = b.reshape(-1, 3).astype(np.int32)
        v = t[:, 0] | (t[:, 1] << 8) | (t[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / float(1 << 23)
    else:
        x = np.frombuffer(b.tobytes(), f"<i{width}").astype(np.float64) / float(1 << (8 * width - 1))
    return x.reshape(-1, channels).mean(axis=1), rate


def fit_clip(x: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` samples; a shorter clip padded with silence at the end."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), x.dtype)])


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filters(s: dict) -> np.ndarray:
    """[fft bins, mels] triangular filters (peak 1) on the HTK mel scale."""
    n_fft = fft_size(s)
    freqs = np.arange(n_fft // 2 + 1) * s["sample_rate"] / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(s["fmin"]), _hz_to_mel(s["fmax"]), int(s["mels"]) + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-9)
    return np.maximum(0.0, np.minimum(up, down)).T


def fft_size(s: dict) -> int:
    return 1 << int(np.ceil(np.log2(window(s))))


def log_mel(x: np.ndarray, s: dict) -> np.ndarray:
    """Float dB [frames, mels] of a mono clip of exactly ``samples(s)`` samples."""
    win, step, n = window(s), hop(s), frames(s)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)
    idx = np.arange(win)[None, :] + step * np.arange(n)[:, None]
    spec = np.fft.rfft(x[idx] * hann, n=fft_size(s), axis=1)
    power = (spec.real ** 2 + spec.imag ** 2) / (hann.sum() ** 2)
    bands = power @ mel_filters(s)
    return 10.0 * np.log10(np.maximum(bands, 1e-20))


def to_pixels(db: np.ndarray) -> np.ndarray:
    lo, hi = DB_RANGE
    return np.clip(np.rint((db - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def features(x: np.ndarray, s: dict) -> np.ndarray:
    """Mono samples -> the uint8 image [frames, mels, 1] (clip cut or padded to ``clip_seconds``)."""
    return to_pixels(log_mel(fit_clip(np.asarray(x, np.float64), samples(s)), s))[..., None]


def load_features(path, s: dict) -> np.ndarray:
    """A .wav file -> the uint8 image [frames, mels, 1] the model takes; ValueError when it cannot be used."""
    x, _ = read_wav(path, int(s["sample_rate"]))
    return features(x, s)


def encoding(s: dict) -> dict:
    """What the model card records: the front end's parameters and the pixel scale."""
    return {"kind": "audio", **s, "frames": frames(s), "fft_size": fft_size(s), "db_range": list(DB_RANGE),
            "window": "hann (periodic)", "mel_scale": "htk",
            "formula": "pixel = clip(round((10 log10(mel band power) + 100) * 2.55), 0, 255)"}
