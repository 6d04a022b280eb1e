"""Checks on uploaded files: what image they really are, and a safe name to show for them."""

from __future__ import annotations

import io
import os
import struct
import unicodedata
import warnings
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
FILENAME_MAX = 255
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHUNK = 1024 * 1024
# Pillow cannot `reduce` images of these modes.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class NotAnImage(Exception):
    """The upload is not an image the service accepts; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    """What decoding an upload found out."""

    format: str
    content_type: str
    width: int
    height: int

    @property
    def suffix(self) -> str:
        return SUFFIXES.get(self.format, "")


def inspect_image(path: str, formats: list[str], max_pixels: int) -> ImageInfo:
    """Decode a stored file to prove it is an image; raise NotAnImage with the reason otherwise."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns; the size limit below is the one that answers.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path, formats=formats) as image:
                info = ImageInfo(
                    format=image.format,
                    content_type=image.get_format_mimetype(),
                    width=image.width,
                    height=image.height,
                )
                if info.width * info.height > max_pixels:
                    raise NotAnImage(
                        f"The image has {info.width}x{info.height} pixels;"
                        f" at most {max_pixels} are accepted."
                    )
                check_decodes(image, path)
    except UnidentifiedImageError:
        accepted = ", ".join(formats)
        raise NotAnImage(f"The file is not an image in an accepted format ({accepted}).") from None
    except PILImage.DecompressionBombError:
        raise NotAnImage(f"The image has more than {max_pixels} pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as error:
        raise NotAnImage(f"The image is damaged or truncated: {error}") from None
    return info


def check_decodes(image: PILImage.Image, path: str) -> None:
    """Read all of an image's data, keeping memory small whatever its size."""
    if image.format == "JPEG":
        # Decoding at 1/8 scale still reads every block, in 1/64 of the memory.
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    elif image.format == "PNG":
        image.verify()  # the structure and every chunk's checksum, to the end
        check_png_pixels(path)
    else:
        image.load()  # the pixel limit bounds the memory this takes


def check_png_pixels(path: str) -> None:
    """Inflate a PNG's pixel data in bounded pieces; raise when it is not a whole zlib stream."""
    inflater = zlib.decompressobj()
    with open(path, "rb") as file:
        file.seek(len(PNG_SIGNATURE))
        while header := file.read(8):
            if len(header) < 8:
                raise EOFError("chunk header cut short")
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IDAT":
                remaining = length
                while remaining:
                    data = file.read(min(remaining, CHUNK))
                    if not data:
                        raise EOFError("pixel data cut short")
                    remaining -= len(data)
                    while data:
                        inflater.decompress(data, CHUNK)
                        data = inflater.unconsumed_tail
            else:
                file.seek(length, os.SEEK_CUR)
            file.seek(4, os.SEEK_CUR)  # the checksum, already verified
            if kind == b"IEND":
                break
    if not inflater.eof:
        raise EOFError("pixel data cut short")


def make_thumbnail(source: BinaryIO, size: int) -> bytes:
    """Return a WebP of at most `size` pixels a side, upright per its EXIF orientation.

    A JPEG decodes straight at the smallest scale that still covers the thumbnail, and only the
    small image is turned upright and converted.
    """
    with PILImage.open(source) as image:
        # The box keeps the aspect: a square one would stop a long strip from decoding reduced.
        image.draft(image.mode, thumbnail_box(image.width, image.height, size))
        # Pillow cannot `reduce` 16-bit images; they are resized in one step.
        image.thumbnail((size, size), reducing_gap=None if image.mode in SIXTEEN_BIT_MODES else 2.0)
        # The box is square, so turning after resizing gives the same thumbnail.
        upright = ImageOps.exif_transpose(image)
        if upright.mode in SIXTEEN_BIT_MODES:
            # Keep the top 8 bits of each sample; a plain conversion clips them to white.
            upright = upright.point(lambda value: value / 256).convert("L")
        upright = upright.convert("RGBA" if upright.has_transparency_data else "RGB")
        buffer = io.BytesIO()
        upright.save(buffer, "WEBP", quality=80)
        return buffer.getvalue()


def thumbnail_box(width: int, height: int, side: int) -> tuple[int, int]:
    """Return the size of an image fitted, aspect kept, within a square of `side` pixels."""
    if width <= side and height <= side:
        return width, height
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def clean_filename(name: str | None, suffix: str) -> str:
    """Return a name safe to show and send back: no folders, no control characters, not too long."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/")
    name = os.path.basename(name)
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C").strip()
    if name in ("", ".", ".."):
        name = f"image{suffix}"
    if len(name) > FILENAME_MAX:
        stem, extension = os.path.splitext(name)
        extension = extension[:16]
        name = stem[: FILENAME_MAX - len(extension)] + extension
    return name
