"""Opening pictures safely: the pixel count is read from the file's header and checked before
anything is decoded, so a small file that would decode to gigabytes (a decompression bomb) is a
one-line refusal naming the file, wherever the project reads an image."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..core.errors import UserError

# PIL's own bomb threshold (~89 M pixels); a CamVid frame has 0.7 M. PIL only warns between this
# and twice it, and OpenCV decodes up to 2**30 pixels: the project refuses above it everywhere.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def _header_size(path: Path | str) -> tuple[int, int]:
    """The size the header declares. PIL's own check is lifted for this header-only read (it
    would hide the size of a bomb over twice its limit); the caller checks the size."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return image.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def checked_size(path: Path | str, what: str = "image") -> tuple[int, int]:
    """(width, height) of a picture from its header; refuses a corrupt file or a bomb."""
    try:
        width, height = _header_size(path)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(f"{path}: corrupt or unreadable {what} ({err})") from None
    if width * height > MAX_PIXELS:
        raise UserError(
            f"{path}: refusing {what} of {width}x{height} pixels: over the limit of "
            f"{MAX_PIXELS} pixels (a decompression bomb?)"
        )
    return width, height


def open_checked(path: Path | str, what: str = "image") -> Image.Image:
    """A fully decoded PIL image, after the header check."""
    checked_size(path, what)
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(f"{path}: corrupt or unreadable {what} ({err})") from None
    return image
