"""The symbols benchmark task: Greek letters, arrows, math, currency and card-suit signs rendered
with Pillow from the system's DejaVu fonts and STIX, as small colour images on random colour
gradients. Built by code on any machine with those fonts (no downloads), deterministic for a
seed (same Pillow/FreeType build).

Why it exists: see TASK_SUMMARY."""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmarks.tasks.render import ink_masters, matplotlib_font_dir
from onnxwootz.core.atomic import write_bytes
from onnxwootz.core.errors import BadDataError, BadSpecError

TASK_SUMMARY = """\
A second few-shot task that no default of the tool was tuned on (#17), built to differ from
glyphs in kind rather than in degree: other classes (52 symbols, no Latin letter or digit),
colour input (32x32 RGB: a random colour gradient behind a symbol of a random contrasting
colour, instead of 24x24 gray), other distortions (rotation, scale, aspect, translation, stroke
weight, blur and per-channel noise, no shear), other fonts (the system's DejaVu families with
their condensed faces and DejaVu Math, and STIX) and another teacher architecture (a
MobileNetV2-style net of inverted residuals with depthwise convs and squeeze-excitation gates,
models.symbols_teacher). The regime is the paper's, as for glyphs: a teacher trained on far
more images than the pruning task gives; few labelled images per class, a validation and a
test split large enough to resolve a point, and an unlabeled pool."""

CLASSES = ("αβγδεζηθλμξπσφψω"  # Greek lowercase
           "ΓΔΛΞΣΦΩ"  # Greek capitals unlike their lowercase and unlike Latin letters
           "←→↑↓↔↕"  # arrows
           "∞∫√≈≠≤≥±÷∇∀∃"  # math
           "∪⊂"  # sets
           "€£¥$¢"  # currency
           "♠♣♥♦")  # card suits
"""Class index = position in this string. Left out on purpose: signs that some font draws like
another class once cropped to its ink and scaled (Θ, Π and Ψ like θ, π and ψ; the partial ∂ like
δ; ∩ like η; ∑ and ∏ like Σ and Π)."""
DATASET_NAME = "symbols"
SYSTEM_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
SYSTEM_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf", "DejaVuSansCondensed-Oblique.ttf",
    "DejaVuSansCondensed-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSerifCondensed.ttf", "DejaVuSerifCondensed-Bold.ttf", "DejaVuSerifCondensed-Italic.ttf",
    "DejaVuSerifCondensed-BoldItalic.ttf", "DejaVuMathTeXGyre.ttf",
)
"""The system's DejaVu faces that map every class (DejaVuSans-ExtraLight lacks the math signs)."""
MATPLOTLIB_FONTS = ("STIXGeneral.ttf",)
"""The one STIX face that maps every class (its italic and bold faces lack arrows or suits)."""
DEFAULT_SIZE = 32
CHANNELS = 3
_SUPERSAMPLE = 4
_GLYPH_PX = 96
"""Font size of the master rendering; symbols are cropped to their ink and scaled from there."""
_MIN_LUMA_CONTRAST = 90.0
"""Foreground and background luma differ by at least this (of 255), so every symbol shows."""
_LUMA = np.array([0.299, 0.587, 0.114])


def font_paths() -> tuple[Path, ...]:
    bundled = matplotlib_font_dir()
    return tuple(SYSTEM_FONT_DIR / name for name in SYSTEM_FONTS) + tuple(bundled / name for name in MATPLOTLIB_FONTS)


@lru_cache(maxsize=1)
def masters() -> tuple[tuple[np.ndarray, ...], ...]:
    """Every (font, class) symbol rendered once at _GLYPH_PX and cropped to its ink, as uint8.
    A font that has no glyph for a class is an error: Pillow would draw its .notdef box."""
    rendered = []
    for path in font_paths():
        if not path.is_file():
            raise BadDataError(f"font {path} is missing (the symbols task needs the DejaVu fonts and matplotlib's STIX)")
        rendered.append(ink_masters(path, CLASSES, _GLYPH_PX, require_mapped=True))
    return tuple(rendered)


def _ink(glyph: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Where the symbol is, in [0, 1] at size x size: stroke weight (max/min filter), rotation
    (+-20 degrees), scale and aspect, a shift, drawn at 4x on a canvas and box-filtered down."""
    from PIL import Image, ImageFilter

    image = Image.fromarray(glyph)
    weight = int(rng.integers(-1, 4))  # -1..3 -> min/max filter of size 2|w|+1
    if weight > 0:
        image = image.filter(ImageFilter.MaxFilter(2 * weight + 1))
    elif weight < 0:
        image = image.filter(ImageFilter.MinFilter(3))
    image = image.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR, expand=True)
    canvas = size * _SUPERSAMPLE
    extent = canvas * rng.uniform(0.55, 0.85)  # the longer side of the symbol on the canvas
    aspect = math.exp(rng.uniform(-0.2, 0.2))
    fit = extent / max(image.width, image.height)
    width = max(1, min(canvas, round(image.width * fit * aspect)))
    height = max(1, min(canvas, round(image.height * fit / aspect)))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    # shift per axis: a direction in {-1, 0, 1} times up to 12% of the canvas (centred a third of the time)
    left = (canvas - width) // 2 + int(rng.integers(-1, 2) * rng.uniform(0, 0.12) * canvas)
    top = (canvas - height) // 2 + int(rng.integers(-1, 2) * rng.uniform(0, 0.12) * canvas)
    board = Image.new("L", (canvas, canvas), 0)
    board.paste(image, (min(max(left, 0), canvas - width), min(max(top, 0), canvas - height)))
    small = board.resize((size, size), Image.Resampling.BOX)
    blur = rng.uniform(0.0, 0.9)
    if blur > 0.4:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(small, dtype=np.float32) / 255.0


def _colourize(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A linear gradient between two random colours in a random direction behind the symbol,
    drawn in a random colour whose luma differs from the background's; per-channel noise.
    Float HWC image in [0, 255]."""
    size = ink.shape[0]
    start = rng.uniform(0, 255, size=3)
    end = np.clip(start + rng.uniform(-70, 70, size=3), 0, 255)
    tries = rng.uniform(0, 255, size=(32, 3))
    contrast = np.minimum(np.abs(tries @ _LUMA - start @ _LUMA), np.abs(tries @ _LUMA - end @ _LUMA))
    fits = np.flatnonzero(contrast >= _MIN_LUMA_CONTRAST)
    if len(fits):
        ink_colour = tries[fits[0]]
    else:  # a mid-gray background: black or white, whichever stands out more
        ink_colour = np.full(3, 0.0 if (start + end) @ _LUMA > 255 else 255.0)
    angle = rng.uniform(0, 2 * math.pi)
    grid = (np.arange(size) + 0.5) / size - 0.5
    along = np.clip(0.5 + math.cos(angle) * grid[None, :] + math.sin(angle) * grid[:, None], 0, 1)[..., None]
    background = start + (end - start) * along
    image = background + (ink_colour - background) * ink[..., None]
    return image + rng.normal(0.0, rng.uniform(0, 14), size=image.shape)


def render_symbols(n_per_class: int, seed: int, size: int = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """`n_per_class` images of every class: x uint8 (N, size, size, 3) RGB, y int64 (N,),
    classes interleaved (y = 0, 1, ..., C-1, 0, ...) so any prefix is nearly balanced. The font
    is drawn at random per image."""
    if n_per_class < 0 or size < 8:
        raise BadSpecError(f"render_symbols needs n_per_class >= 0 and size >= 8 (got {n_per_class}, {size})")
    fonts = masters()
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(len(CLASSES), dtype=np.int64), n_per_class)
    chosen = rng.integers(0, len(fonts), size=len(labels))
    images = np.empty((len(labels), size, size, CHANNELS), dtype=np.uint8)
    for index, (label, font) in enumerate(zip(labels, chosen)):
        images[index] = np.clip(np.rint(_colourize(_ink(fonts[font][label], rng, size), rng)), 0, 255).astype(np.uint8)
    return images, labels


UNLABELED_SEED_OFFSET = 104729
"""The unlabeled pool comes from its own stream (seed + this), apart from the labelled splits
and from the teacher's images."""


def make_pruning_dataset(path: str | Path, n_train_per_class: int = 8, n_val_per_class: int = 40,
                         n_test_per_class: int = 40, seed: int = 0, size: int = DEFAULT_SIZE,
                         n_unlabeled_per_class: int = 100) -> Path:
    """Write the pruning task as an .npz (`onnxwootz.data.load_dataset` reads it): x_train,
    y_train (few labels), x_val, y_val (every decision), x_test, y_test (the reported figure)
    from one seeded stream, so no two splits share an image, and x_unlabeled from another. The
    teacher is trained on a third seed."""
    if min(n_train_per_class, n_val_per_class, n_test_per_class) <= 0 or n_unlabeled_per_class < 0:
        raise BadSpecError("need at least one train, val and test image per class and no negative pool "
                           f"(got {n_train_per_class}, {n_val_per_class}, {n_test_per_class}, {n_unlabeled_per_class})")
    x, y = render_symbols(n_train_per_class + n_val_per_class + n_test_per_class, seed, size)
    train_end = n_train_per_class * len(CLASSES)
    val_end = train_end + n_val_per_class * len(CLASSES)
    arrays = {"x_train": x[:train_end], "y_train": y[:train_end], "x_val": x[train_end:val_end],
              "y_val": y[train_end:val_end], "x_test": x[val_end:], "y_test": y[val_end:]}
    if n_unlabeled_per_class > 0:
        arrays["x_unlabeled"] = render_symbols(n_unlabeled_per_class, seed + UNLABELED_SEED_OFFSET, size)[0]
    buffer = io.BytesIO()  # a buffer, so numpy never appends ".npz" to the name, and the write is atomic
    np.savez_compressed(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())
