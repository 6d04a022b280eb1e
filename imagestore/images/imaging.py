"""Checks on uploaded files: what image they really are and the memory decoding them takes;
their thumbnails; a safe name to show for them."""

from __future__ import annotations

import ctypes
import io
import math
import os
import struct
import unicodedata
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, BinaryIO

from PIL import Image as PILImage
from PIL import ImageFile, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
# Formats Pillow names for files that are an accepted format to every reader, and are stored as
# it: a JPEG with more pictures after the first, as phone cameras write them, opens as an MPO.
STORED_AS = {"MPO": "JPEG"}
FILENAME_MAX = 255
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MB = 1024 * 1024
CHUNK = MB
# A WebP takes 16 bytes a pixel at its peak (measured, lossy or lossless, with alpha or not):
# Pillow's 4, and libwebp's canvas, previous canvas and the copy it hands to Pillow, 4 each.
# The premultiplied copy that resizing makes fits where that last copy was.
WEBP_BYTES_PER_PIXEL = 16
# A GIF's first frame takes 2: its pixels, and the copy Pillow fills to dispose of the frame.
GIF_BYTES_PER_PIXEL = 2
# Pillow keeps these modes in 1 or 2 bytes a pixel; every other mode (RGB too) in 4.
ONE_BYTE_MODES = ("1", "L", "P")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Resizing an image with alpha works on a premultiplied copy of the same size.
ALPHA_MODES = ("LA", "RGBA")
# JPEG frame markers (SOF0-SOF15 but DHT, JPG and DAC), and those of progressive frames.
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_PROGRESSIVE_FRAMES = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Markers without a length: TEM, RST0-RST7, SOI.
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
JPEG_SOS, JPEG_EOI = 0xDA, 0xD9
# glibc's mallopt parameter, and its first value: blocks this large are mapped on their own.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def stored_media_types(formats: list[str]) -> list[str]:
    """Return the media types of images stored in these accepted formats, in their order."""
    PILImage.init()
    return list(dict.fromkeys(PILImage.MIME[name] for name in formats if name in PILImage.MIME))


class NotAnImage(Exception):
    """The upload is not an image the service accepts; the message says why."""


class TooBigToDecode(NotAnImage):
    """Decoding the image would take more memory than allowed; the message says how much."""


@dataclass(frozen=True)
class DecodeLimits:
    """What an upload may be: its formats, its pixels, and the memory decoding it may take.

    `thumbnail_size` is the largest thumbnail's side: a JPEG is decoded at the scale it needs.
    """

    formats: list[str]
    max_pixels: int
    max_decoded_bytes: int
    thumbnail_size: int


@dataclass(frozen=True)
class ImageInfo:
    """What an upload's header tells: its format, size, and the memory decoding it takes."""

    format: str
    content_type: str
    width: int
    height: int
    decoded_bytes: int

    @property
    def suffix(self) -> str:
        return SUFFIXES.get(self.format, "")


@contextmanager
def opened(path: str, formats: list[str], max_pixels: int) -> Iterator[ImageFile.ImageFile]:
    """Open an image file; turn Pillow's refusals into NotAnImage with the reason."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns; the limits of DecodeLimits are the ones that answer.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path, formats=formats) as image:
                yield image
    except UnidentifiedImageError:
        accepted = ", ".join(formats)
        raise NotAnImage(f"The file is not an image in an accepted format ({accepted}).") from None
    except PILImage.DecompressionBombError:
        raise NotAnImage(f"The image has more than {max_pixels} pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as error:
        raise NotAnImage(f"The image is damaged or truncated: {error}") from None


def inspect_image(path: str, limits: DecodeLimits) -> ImageInfo:
    """Read what a stored file is from its header alone; raise NotAnImage when it is refused.

    No pixel is decoded here: the pixel count and the memory decoding takes are judged first.
    """
    with opened(path, limits.formats, limits.max_pixels) as image:
        # Pillow names the format and media type of every file it opens from an accepted plugin.
        stored_as = STORED_AS.get(image.format, image.format) if image.format else None
        content_type = PILImage.MIME.get(stored_as) if stored_as else None
        if stored_as is None or content_type is None:
            raise NotAnImage("The image's format is not known.")
        info = ImageInfo(
            format=stored_as,
            content_type=content_type,
            width=image.width,
            height=image.height,
            decoded_bytes=decoded_bytes(image, limits.thumbnail_size),
        )
    if info.width * info.height > limits.max_pixels:
        raise NotAnImage(
            f"The image has {info.width}x{info.height} pixels;"
            f" at most {limits.max_pixels} are accepted."
        )
    check_decoded_bytes(info.width, info.height, info.decoded_bytes, limits.max_decoded_bytes)
    return info


def check_image(path: str, limits: DecodeLimits) -> None:
    """Decode an inspected file to prove its data whole; raise NotAnImage when it is not."""
    with opened(path, limits.formats, limits.max_pixels) as image:
        check_decodes(image, path)


def check_decoded_bytes(width: int, height: int, needed: int, limit: int) -> None:
    """Raise TooBigToDecode when decoding an image takes more memory than the limit."""
    if needed > limit:
        raise TooBigToDecode(
            f"The image has {width}x{height} pixels, which take about"
            f" {math.ceil(needed / MB)} MB of memory to decode; at most {limit / MB:g} MB"
            " are allowed."
        )


def decoded_bytes(image: ImageFile.ImageFile, thumbnail_size: int) -> int:
    """Estimate from an opened image's header the most memory that decoding it here takes.

    That is the larger of the upload check and the largest thumbnail: Pillow's pixels at the
    scale they are decoded (a JPEG reduced by `draft`, other formats whole), the premultiplied
    copy that resizing an image with alpha makes, the decoder's own buffers (libwebp's
    canvases, the copy Pillow keeps to dispose of a GIF frame, the coefficients libjpeg keeps of
    a JPEG in several scans), and the file itself, which Pillow reads whole for a WebP or from
    the object store.
    """
    if image.format == "WEBP":
        per_pixel = WEBP_BYTES_PER_PIXEL
    elif image.format == "GIF":
        per_pixel = GIF_BYTES_PER_PIXEL
    else:
        per_pixel = bytes_per_pixel(image.mode) * (2 if image.mode in ALPHA_MODES else 1)
    decoded = image.width * image.height * per_pixel
    file = image.fp
    if file is None:  # Pillow lets go of the file only once the image is loaded or closed
        raise ValueError("The image's file is already closed.")
    if isinstance(image, JpegImageFile):  # MPO files too: JPEGs with more pictures after it
        box = thumbnail_box(image.width, image.height, thumbnail_size)
        scale = draft_scale(image.width, image.height, box)
        reduced = math.ceil(image.width / scale) * math.ceil(image.height / scale)
        decoded = reduced * per_pixel + jpeg_coefficient_bytes(file)
    return decoded + stream_size(file)


def stream_size(file: IO[bytes]) -> int:
    """Return the size of a seekable file, leaving its position as it was."""
    start = file.tell()
    try:
        return file.seek(0, os.SEEK_END)
    finally:
        file.seek(start)


def bytes_per_pixel(mode: str) -> int:
    """Return the bytes a pixel of this mode takes in Pillow's memory."""
    if mode in ONE_BYTE_MODES:
        return 1
    if mode in SIXTEEN_BIT_MODES:
        return 2
    return 4


def thumbnail_box(width: int, height: int, side: int) -> tuple[int, int]:
    """Return the size of an image fitted, aspect kept, within a square of `side` pixels."""
    if width <= side and height <= side:
        return width, height
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draft_scale(width: int, height: int, box: tuple[int, int]) -> int:
    """Return the reduction Pillow's JPEG `draft` picks to cover a box: 8, 4, 2 or 1."""
    ratio = min(width // box[0], height // box[1])
    return max((scale for scale in (8, 4, 2, 1) if scale <= ratio), default=1)


def jpeg_coefficient_bytes(file: IO[bytes]) -> int:
    """Return the memory libjpeg takes for a JPEG's whole-image coefficients, 0 if it needs none.

    A progressive JPEG, or one whose first scan lacks a component, is decoded from every DCT
    coefficient of the image held at once: 2 bytes a sample whatever the output scale, so a
    small file of a flat colour can take hundreds of MB. Only the headers are read.
    """
    start = file.tell()
    try:
        file.seek(2)  # after SOI
        frame_marker, frame = 0, b""
        while (marker := jpeg_marker(file)) not in (None, JPEG_EOI):
            if marker in JPEG_STANDALONE:
                continue
            header = file.read(2)
            if len(header) < 2:
                break
            length = max(0, int.from_bytes(header, "big") - 2)
            if marker in JPEG_FRAMES:
                frame_marker, frame = marker, file.read(length)
            elif marker == JPEG_SOS:
                return coefficient_bytes(frame_marker, frame, file.read(1))
            else:
                file.seek(length, os.SEEK_CUR)
        return 0
    finally:
        file.seek(start)


def jpeg_marker(file: IO[bytes]) -> int | None:
    """Return the next marker's code, skipping fill bytes; None at the end of the file."""
    byte = file.read(1)
    while byte and byte != b"\xff":
        byte = file.read(1)  # bytes between segments, which libjpeg skips too
    while byte == b"\xff":
        byte = file.read(1)
    return byte[0] if byte else None


def coefficient_bytes(marker: int, frame: bytes, scan: bytes) -> int:
    """Return libjpeg's coefficient buffer for a frame header, 0 when the first scan has all.

    `scan` starts the first scan's header: its first byte is the number of components in it.
    """
    if len(frame) < 6 or not scan:
        return 0
    height, width, count = struct.unpack(">HHB", frame[1:6])
    sampling = [(byte >> 4, byte & 15) for byte in frame[7 : 6 + 3 * count : 3]]
    if not sampling or (marker not in JPEG_PROGRESSIVE_FRAMES and scan[0] >= len(sampling)):
        return 0
    most_h = max(h for h, _ in sampling) or 1
    most_v = max(v for _, v in sampling) or 1
    blocks = 0
    for h, v in sampling:
        h, v = max(h, 1), max(v, 1)
        across = math.ceil(width * h / (most_h * 8))
        down = math.ceil(height * v / (most_v * 8))
        # libjpeg rounds each component's blocks up to whole MCUs.
        blocks += math.ceil(across / h) * h * math.ceil(down / v) * v
    return blocks * 64 * 2


def check_decodes(image: PILImage.Image, path: str) -> None:
    """Read all of an image's data, keeping memory small whatever its size."""
    if isinstance(image, JpegImageFile):
        # Decoding at 1/8 scale still reads every block, in 1/64 of the memory.
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    elif image.format == "PNG":
        image.verify()  # the structure and every chunk's checksum, to the end
        check_png_pixels(path)
    else:
        image.load()  # the limit on decoded bytes bounds the memory this takes


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


def make_thumbnail(source: BinaryIO, size: int, max_decoded_bytes: int) -> bytes:
    """Return a WebP of at most `size` pixels a side, upright per its EXIF orientation.

    Memory stays near the image's `decoded_bytes`: a JPEG decodes straight at the smallest scale
    that still covers the thumbnail, and only the small image is turned upright and converted.
    Raise TooBigToDecode when decoding it would take more than `max_decoded_bytes`.
    """
    with PILImage.open(source) as image:
        needed = decoded_bytes(image, size)
        check_decoded_bytes(image.width, image.height, needed, max_decoded_bytes)
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


def return_freed_memory() -> None:
    """Make glibc hand large blocks back to the system as soon as they are freed.

    glibc raises its threshold for mapping a block on its own each time such a block is freed,
    up to 32 MB; after one decoded image, the next one's 16 MB blocks come from the heap, which
    keeps what it frees: workers kept 70 MB after a thumbnail and added the next image on top.
    A fixed threshold keeps each decode's memory in blocks that are unmapped when freed, so a
    worker's peak is its own memory plus one image's. Elsewhere than glibc, nothing is set.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


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
