"""The one room where pictures are decoded, with one policy for every stage (convert and its
cache, the data loader of train/evaluate/visualize, predict's torch and ONNX backends, the model
card): the pixel count is read from the header and checked before anything is decoded (a
decompression bomb is refused), a truncated or corrupt file is refused (OpenCV would decode a cut
JPEG silently), a JPEG is turned upright by its EXIF orientation (a phone's portrait photo, as
every viewer and OpenCV show it), and 16-bit pictures are scaled to 8 bits (PIL's own conversion
clips them to white). Every refusal is one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..core.errors import UserError
from ..core.fileio import refuse_special_file

# PIL's own bomb threshold (~89 M pixels); a CamVid frame has 0.7 M. PIL only warns between this
# and twice it, and OpenCV decodes up to 2**30 pixels: the project refuses above it everywhere.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# What PIL raises for a file it cannot read: ValueError is its guard against metadata bombs (a
# zTXt or iCCP chunk that inflates past MAX_TEXT_CHUNK).
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


# EXIF orientations that swap width and height (a camera held upright: 6 and 8; 5 and 7 mirror)
SIDEWAYS = {5, 6, 7, 8}


def _orientation(image: Image.Image) -> int:
    """A JPEG's EXIF orientation (in its header; 1: upright). Other formats are taken as stored,
    and so is a JPEG whose EXIF block cannot be read, as OpenCV does."""
    if image.format not in ("JPEG", "MPO"):
        return 1
    try:
        return image.getexif().get(ExifTags.Base.Orientation, 1)
    except UNREADABLE:
        return 1


def _header_size(path: Path | str) -> tuple[int, int]:
    """The size the header declares, upright. PIL's own check is lifted for this header-only
    read (it would hide the size of a bomb over twice its limit); the caller checks the size."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            width, height = image.size
            return (height, width) if _orientation(image) in SIDEWAYS else (width, height)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def checked_size(path: Path | str, what: str = "image") -> tuple[int, int]:
    """(width, height) of a picture from its header; refuses a corrupt file or a bomb."""
    refuse_special_file(path)  # a FIFO would block the read
    try:
        width, height = _header_size(path)
    except UNREADABLE as err:
        raise UserError(f"{path}: corrupt or unreadable {what} ({err})") from None
    if width * height > MAX_PIXELS:
        raise UserError(
            f"{path}: refusing {what} of {width}x{height} pixels: over the limit of "
            f"{MAX_PIXELS} pixels (a decompression bomb?)"
        )
    return width, height


def open_checked(path: Path | str, what: str = "image") -> Image.Image:
    """A fully decoded PIL image, upright, after the header check."""
    checked_size(path, what)
    try:
        image = Image.open(path)
        image.load()
    except UNREADABLE as err:
        raise UserError(f"{path}: corrupt or unreadable {what} ({err})") from None
    if _orientation(image) == 1:
        return image
    with image:
        return ImageOps.exif_transpose(image)


def read_rgb(path: Path | str, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB of a picture: images, and the RGB label masks of convert."""
    with open_checked(path, what) as image:
        if image.mode.startswith("I;16"):  # 16-bit gray: keep the high byte, as PIL does for RGB
            gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        if image.mode in ("I", "F"):
            raise UserError(f"{path}: 32-bit {what} (mode {image.mode}): save it with 8 or 16 bits")
        return np.asarray(image.convert("RGB"))


def read_ids(path: Path | str, what: str = "mask") -> np.ndarray:
    """(H, W) values of a single-channel picture as stored (class ids: never scaled), a
    writable copy (torch refuses read-only arrays)."""
    with open_checked(path, what) as image:
        if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise UserError(f"{path}: expected a single-channel {what}, found mode {image.mode}")
        return np.array(image)
