"""Glyph rasterizing shared by the rendered benchmark tasks (glyphs, symbols, OCR): where
matplotlib's bundled fonts are, and each class drawn once per font, cropped to its ink."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from onnxwootz.core.errors import BadDataError


def matplotlib_font_dir() -> Path:
    """matplotlib's bundled TrueType fonts: installed wherever matplotlib is."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def ink_masters(path: Path, chars: Iterable[str], px: int, require_mapped: bool = False) -> tuple[np.ndarray, ...]:
    """Every char drawn once in the font at `path` at `px` pixels and cropped to its ink, as
    uint8 arrays: the masters a task distorts per image. A char that draws no ink is an error;
    with `require_mapped`, so is one the font's character map lacks (Pillow would draw its
    .notdef box)."""
    from PIL import Image, ImageDraw, ImageFont

    mapped = None
    if require_mapped:
        from fontTools.ttLib import TTFont

        mapped = TTFont(str(path), lazy=True).getBestCmap()
    font = ImageFont.truetype(str(path), px)
    glyphs = []
    for char in chars:
        canvas = Image.new("L", (3 * px, 3 * px), 0)
        ImageDraw.Draw(canvas).text((px, px), char, font=font, fill=255)
        box = canvas.getbbox()
        if (mapped is not None and ord(char) not in mapped) or box is None:
            raise BadDataError(f"font {path.name} has no glyph for '{char}'")
        glyphs.append(np.asarray(canvas.crop(box)))
    return tuple(glyphs)
