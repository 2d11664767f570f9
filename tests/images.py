"""Image bytes made in the tests: good ones and every kind of bad one."""
from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), color=(200, 30, 30), **save) -> bytes:
    mode = "RGBA" if fmt == "PNG" and len(color) == 4 else "RGB"
    img = Image.new(mode, size, color)
    # A little structure so re-encodes differ from a flat colour.
    for x in range(0, size[0], 8):
        img.putpixel((x, min(x, size[1] - 1)), (0, 0, 0) if mode == "RGB" else (0, 0, 0, 255))
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def unique_jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    return image_bytes("JPEG", size, color=(seed % 256, (seed * 7) % 256, (seed * 13) % 256))


def truncated_jpeg() -> bytes:
    data = image_bytes("JPEG", (256, 256))
    return data[: len(data) // 2]


def bitflipped_png() -> bytes:
    data = bytearray(image_bytes("PNG", (64, 64)))
    idat = data.find(b"IDAT")
    for i in range(idat + 8, idat + 40):  # corrupt the compressed pixel stream
        data[i] ^= 0xFF
    return bytes(data)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def gif_declaring(width: int, height: int) -> bytes:
    header = b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"
    image = b"," + struct.pack("<HHHH", 0, 0, width, height) + b"\x00" + b"\x02\x02\x44\x01\x00" + b";"
    return header + image


def png_then_html() -> bytes:
    return image_bytes("PNG", (16, 16)) + b"<html><script>alert(1)</script></html>"


HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script>'
       b'<rect width="10" height="10"/></svg>')
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke showpage\n"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def tiff_bytes() -> bytes:
    return image_bytes("TIFF", (16, 16))


def psd_bytes() -> bytes:
    # Minimal PSD header: signature, version 1, reserved, 3 channels, 16x16, depth 8, RGB.
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 16, 16, 8, 3) + b"\x00" * 64


def jpeg_with_exif(description: str = "<script>alert(1)</script>", orientation: int = 6) -> bytes:
    img = Image.new("RGB", (40, 20), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010E] = description  # ImageDescription
    exif[0x0112] = orientation  # rotate 90 CW on display
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)}  # GPS IFD
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()
