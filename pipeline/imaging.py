"""Image decoding and resizing with numpy and Pillow only.

Training (every data source) and the TensorFlow-free edge runtime both use these functions, so an image is
decoded, converted and resized on the device exactly as it was for training.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
from PIL import Image, ImageOps

RESAMPLE = Image.Resampling.BILINEAR
# Largest image decoded, in pixels: Pillow's decompression-bomb threshold (about 89 million, a 9,500 px
# square); a file declaring more is refused before any pixel is decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """[..., H, W, C] uint8 with C in (1, 3, 4) -> C == channels. RGBA is composited on black."""
    c = image.shape[-1]
    if c == channels:
        return image
    if c == 4:
        rgb = image[..., :3].astype(np.float32) * (image[..., 3:4].astype(np.float32) / 255.0)
        image, c = np.rint(rgb).astype(np.uint8), 3
        if channels == 3:
            return image
    if c == 3 and channels == 1:
        gray = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.rint(gray).clip(0, 255).astype(np.uint8)[..., None]
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_one(image: np.ndarray, size, policy: str = "resize") -> np.ndarray:
    """Resize one [H, W, C] uint8 image to ``size`` = (h, w): stretch (``resize``) or letterbox (``pad``)."""
    if not size or tuple(image.shape[:2]) == tuple(size):
        return image
    h, w = int(size[0]), int(size[1])
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if policy == "pad":
        pil = ImageOps.pad(pil, (w, h), method=RESAMPLE, color=0, centering=(0.5, 0.5))
    else:
        pil = pil.resize((w, h), RESAMPLE)
    out = np.asarray(pil, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def resize(images: np.ndarray, size, policy: str = "resize") -> np.ndarray:
    """Resize a batch [N, H, W, C] uint8."""
    if not size or tuple(images.shape[1:3]) == tuple(size):
        return images
    out = np.empty((len(images), int(size[0]), int(size[1]), images.shape[-1]), np.uint8)
    for i, image in enumerate(images):
        out[i] = resize_one(image, size, policy)
    return out


def conform(images: np.ndarray, channels: int, size, policy: str = "resize") -> np.ndarray:
    """Bring a batch to ``channels`` and ``size``; accepts [N, H, W] too."""
    if images.ndim == 3:
        images = images[..., None]
    return resize(to_channels(images, channels), size, policy)


def decode_file(path, channels: int) -> np.ndarray:
    """Decode an image file (JPEG, PNG, BMP, GIF first frame) to [H, W, channels] uint8.

    Raises ``OSError``/``ValueError`` for unreadable files, and ``ValueError`` for a file declaring more than
    ``MAX_PIXELS`` pixels (a decompression bomb) before decoding it; callers report and skip them.
    """
    with _open_checked(path) as pil:
        pil.load()
        pil = ImageOps.exif_transpose(pil)  # phone photos: upright as a person sees them
        if pil.mode.startswith("I;16"):  # 16-bit grayscale: keep the high byte instead of clipping
            array = (np.asarray(pil, dtype=np.uint16) >> 8).astype(np.uint8)[..., None]
        elif pil.mode in ("I", "F"):
            raise ValueError(f"{pil.mode} (32-bit) images are not supported; convert them to 8 or 16 bits")
        elif pil.mode in ("RGBA", "LA") or (pil.mode == "P" and "transparency" in pil.info):
            array = np.asarray(pil.convert("RGBA"), dtype=np.uint8)
        elif pil.mode in ("L", "1"):
            array = np.asarray(pil.convert("L"), dtype=np.uint8)[..., None]
        else:
            array = np.asarray(pil.convert("RGB"), dtype=np.uint8)
    return to_channels(array, channels)


def _open_checked(path) -> Image.Image:
    """``Image.open`` that refuses a declared size above ``MAX_PIXELS`` with a ValueError (Pillow itself only
    warns up to twice its limit and raises an error class that is neither OSError nor ValueError beyond)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            pil = Image.open(path)
        except Image.DecompressionBombError as exc:  # "Image size (N pixels) exceeds limit of M pixels, ..."
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found.group(1)):,} pixels" if found else "size"
            raise ValueError(f"declared {size} is above the limit of {MAX_PIXELS:,} "
                             "(a decompression bomb?)") from None
    w, h = pil.size
    if w * h > MAX_PIXELS:
        pil.close()
        raise ValueError(f"declared {w}x{h} = {w * h:,} pixels is above the limit of {MAX_PIXELS:,} "
                         "(a decompression bomb?)")
    return pil


def load_image(path, channels: int, size, policy: str = "resize") -> np.ndarray:
    """Decode and resize one file exactly as the training data was: [H, W, C] uint8."""
    return resize_one(decode_file(path, channels), size, policy)
