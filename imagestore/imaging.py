"""Checks on uploaded files: what image they really are, and a safe name to show for them."""

from __future__ import annotations

import os
import unicodedata
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
FILENAME_MAX = 255


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


def inspect_image(stream: BinaryIO, formats: list[str], max_pixels: int) -> ImageInfo:
    """Decode a whole image to prove it is one; raise NotAnImage with the reason otherwise."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns; the size limit below is the one that answers.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(stream, formats=formats) as image:
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
                image.load()
    except UnidentifiedImageError:
        accepted = ", ".join(formats)
        raise NotAnImage(f"The file is not an image in an accepted format ({accepted}).") from None
    except PILImage.DecompressionBombError:
        raise NotAnImage(f"The image has more than {max_pixels} pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise NotAnImage(f"The image is damaged or truncated: {error}") from None
    finally:
        stream.seek(0)
    return info


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
