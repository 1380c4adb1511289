"""A spoken-keyword dataset made offline: ``espeak-ng`` speaks the words, numpy adds room and noise.

:func:`generate` writes ``<out>/<class>/<nnnnn>.wav`` clips of ``seconds`` (1 s) at ``rate`` (16 kHz), 16-bit
mono, for the ten keywords of the Speech Commands benchmark (yes, no, up, down, left, right, on, off, stop,
go), ``_unknown_`` (other words) and ``_silence_`` (background noise alone). Each clip draws, from one seeded
generator: an English voice and variant (8 accents x 20 variants), a speed (110-230 words per minute), a
pitch (15-85), a word position inside the clip, a level, a reverb (an exponentially decaying noise impulse
response, RT60 0.05-0.6 s, on half the clips) and a background noise (white, pink or brown, 5-35 dB SNR;
alone at -70..-15 dBFS for ``_silence_``).
The same seed gives the same clips on the same espeak-ng. Nothing here prints; progress goes through
:mod:`pipeline.progress`.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "zero",
                 "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "forward",
                 "backward",
                 "follow", "learn", "visual")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt",
            "klatt2", "klatt3", "whisper", "grandma", "grandpa")


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise PipelineError("espeak-ng not found: install it (apt-get install espeak-ng, or `make keywords` "
                            "as root)")
    return path


def classes() -> list:
    return [*KEYWORDS, UNKNOWN, SILENCE]


def _read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
    return np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0, rate


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    """16-bit mono PCM, written to a temporary name and renamed."""
    q = np.clip(np.rint(np.asarray(x) * 32767.0), -32768, 32767).astype("<i2")
    tmp = path.with_name(f".{path.name}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(q.tobytes())
    tmp.replace(path)


def speak(word: str, voice: str, speed: int, pitch: int, rate: int, tmp: Path) -> np.ndarray:
    """The word spoken by espeak-ng, resampled to ``rate``, leading and trailing silence trimmed."""
    from scipy.signal import resample_poly

    out = tmp / "say.wav"
    cmd = [espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), word]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    if done.returncode != 0 or not out.is_file():
        raise PipelineError(f"espeak-ng failed for {word!r} with voice {voice}: "
                            f"{done.stderr.decode(errors='replace').strip()[:200]}")
    x, src = _read(out)
    if src != rate:
        g = np.gcd(src, rate)
        x = resample_poly(x, rate // g, src // g)
    loud = np.flatnonzero(np.abs(x) > 0.02 * max(np.abs(x).max(), 1e-9))
    return x[loud[0]:loud[-1] + 1] if len(loud) else x


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2) noise."""
    white = rng.standard_normal(n)
    if kind == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.maximum(np.arange(len(spec)), 1.0)
        spec /= np.sqrt(f) if kind == "pink" else f
        x = np.fft.irfft(spec, n)
    return x / max(np.sqrt(np.mean(x ** 2)), 1e-12)


def reverb(x: np.ndarray, rate: int, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with an exponentially decaying noise impulse response (energy down 60 dB after ``rt60``)."""
    n = max(1, int(rt60 * rate))
    t = np.arange(n) / rate
    ir = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60)
    ir /= np.sqrt(np.sum(ir ** 2))
    from scipy.signal import fftconvolve

    tail = fftconvolve(x, ir)[:len(x)]
    return (1.0 - wet) * x + wet * tail


def clip(word: str | None, rng: np.random.Generator, rate: int, seconds: float, tmp: Path) -> np.ndarray:
    """One clip: the word (None: silence) placed at random in ``seconds``, reverb, level and noise."""
    n = int(round(seconds * rate))
    x = np.zeros(n)
    if word is not None:
        variant = VARIANTS[rng.integers(len(VARIANTS))]
        voice = ACCENTS[rng.integers(len(ACCENTS))] + (f"+{variant}" if variant else "")
        spoken = speak(word, voice, int(rng.integers(110, 231)), int(rng.integers(15, 86)), rate, tmp)[:n]
        start = int(rng.integers(0, n - len(spoken) + 1))
        x[start:start + len(spoken)] = spoken / max(np.abs(spoken).max(), 1e-9)
        if rng.random() < 0.5:
            x = reverb(x, rate, float(rng.uniform(0.05, 0.6)), float(rng.uniform(0.2, 0.6)), rng)
        x *= 10.0 ** (rng.uniform(-20.0, -1.0) / 20.0) / max(np.abs(x).max(), 1e-9)
        rms = np.sqrt(np.mean(x[x != 0] ** 2)) if np.any(x) else 0.0
        level = rms * 10.0 ** (-rng.uniform(5.0, 35.0) / 20.0)
    else:
        level = 10.0 ** (rng.uniform(-70.0, -15.0) / 20.0)
    x = x + level * noise(("white", "pink", "brown")[rng.integers(3)], n, rng)
    peak = np.abs(x).max()
    return x / peak * 0.99 if peak > 0.99 else x


def generate(out: Path | str, per_class: int, seed: int = 0, rate: int = 16000, seconds: float = 1.0,
             unknown: int | None = None, silence: int | None = None) -> dict:
    """Write ``per_class`` clips of each keyword (``unknown`` / ``silence`` clips of the two extra classes,
    ``per_class`` by default) under ``out``; return {class: count}. An existing class folder is replaced."""
    from pipeline import progress

    espeak()
    out = Path(out)
    rng = np.random.default_rng(seed)
    plan = [(w, w, per_class) for w in KEYWORDS]
    plan += [(UNKNOWN, None, per_class if unknown is None else unknown),
             (SILENCE, None, per_class if silence is None else silence)]
    counts = {}
    with tempfile.TemporaryDirectory() as tmp, \
            progress.track(sum(p[2] for p in plan), "keywords", unit="clip") as advance:
        for name, word, count in plan:
            folder = out / name
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            for i in range(count):
                spoken = UNKNOWN_WORDS[rng.integers(len(UNKNOWN_WORDS))] if name == UNKNOWN else word
                write_wav(folder / f"{i:05d}.wav", clip(spoken, rng, rate, seconds, Path(tmp)), rate)
                advance(1)
            counts[name] = count
    return counts
