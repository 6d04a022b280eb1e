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
    """Return a WebP of at most `size` pixels a side, upright per its EXIF orientation."""
    with PILImage.open(source) as image:
        image.draft(image.mode, (size, size))  # JPEG decodes straight at a reduced scale
        upright = ImageOps.exif_transpose(image)
        upright.thumbnail((size, size))
        upright = upright.convert("RGBA" if upright.has_transparency_data else "RGB")
        buffer = io.BytesIO()
        upright.save(buffer, "WEBP", quality=80)
        return buffer.getvalue()


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
