"""The glyphs benchmark task: characters rendered with Pillow from the fonts matplotlib bundles,
distorted at random, as small gray images. Built by code on any machine (no downloads), and
deterministic for a seed (same Pillow/FreeType build).

Why the task has this shape: see TASK_SUMMARY."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmarks.tasks.render import ink_masters, matplotlib_font_dir
from onnxwootz.core.errors import BadDataError, BadSpecError

TASK_SUMMARY = """\
The paper's gains appear in one regime: many classes, few labelled images per class, and a teacher
trained on far more data than the pruning task gives, so that a pruned network cannot win its
accuracy back from the labels alone while the teacher's features (block outputs, which need no
labels) can still teach it. On scikit-learn digits (10 classes, ~140 labelled images per class)
every pruned candidate recovers in a few hundred steps, so the method shows no gain there.
Glyphs: 45 classes (digits, uppercase letters without I and O, which no font tells from 1 and 0,
and the lowercase letters whose shape differs from their capital: a b d e f g h n q r t, as in
EMNIST-balanced), rendered from 21 fonts (DejaVu Sans/Serif/Mono and STIX in four weights and
slants, five Computer Modern faces) with random rotation, shear, scale, translation, stroke
thickness, contrast, blur and noise. The teacher learns from hundreds of images per class and,
like the paper's ImageNet-trained ResNets, has more inner channels than the task needs (its
modules are twice as wide inside as between them). The pruning dataset gives only a few
labelled images per class for training, enough validation images per class that a 0.5-point
accuracy difference is a real one, and unlabeled images (cheap in practice: a deployment sees
plenty of unlabeled inputs), which the method's block pre-training can use and label-based
fine-tuning cannot."""

CLASSES = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabdefghnqrt"
"""Class index = position in this string."""
DATASET_NAME = "glyphs"
FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf",
)
"""matplotlib's bundled fonts (always installed with it), so the task does not depend on the
system's font set. The Computer Modern files map ASCII letters and digits to their usual glyphs."""
DEFAULT_SIZE = 24
_SUPERSAMPLE = 4
_GLYPH_PX = 96
"""Font size of the master rendering; glyphs are cropped to their ink and scaled from there."""


@lru_cache(maxsize=1)
def _masters() -> tuple[tuple[np.ndarray, ...], ...]:
    """Every (font, class) glyph rendered once at _GLYPH_PX and cropped to its ink, as uint8."""
    masters = []
    for name in FONTS:
        path = matplotlib_font_dir() / name
        if not path.is_file():
            raise BadDataError(f"font {name} is missing from {matplotlib_font_dir()} (the glyphs task needs matplotlib's bundled fonts)")
        masters.append(ink_masters(path, CLASSES, _GLYPH_PX))
    return tuple(masters)


def _render_one(glyph: np.ndarray, rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """One distorted rendering: thickness (max/min filter), an affine map (rotation, shear,
    anisotropic scale, translation) drawn at 4x and shrunk with antialiasing, then contrast,
    blur and Gaussian noise. Float image in [0, 255]."""
    from PIL import Image, ImageFilter

    image = Image.fromarray(glyph)
    thickness = int(rng.integers(-2, 4))  # -2..3 -> min/max filter of size 2|t|+1
    if thickness > 0:
        image = image.filter(ImageFilter.MaxFilter(2 * thickness + 1))
    elif thickness < 0:
        image = image.filter(ImageFilter.MinFilter(2 * -thickness + 1))
    canvas = size * _SUPERSAMPLE
    angle = math.radians(rng.uniform(-15, 15) * strength)
    shear = rng.uniform(-0.3, 0.3) * strength
    scale = math.exp(rng.uniform(-0.25, 0.15) * strength)
    aspect = math.exp(rng.uniform(-0.15, 0.15) * strength)
    shift = rng.uniform(-0.1, 0.1, size=2) * strength * canvas
    height, width = glyph.shape
    fit = 0.8 * canvas / max(height, width) * scale  # glyph pixels -> canvas pixels
    cos, sin = math.cos(angle), math.sin(angle)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([fit * aspect, fit / aspect])
    inverse = np.linalg.inv(forward)
    center_out = np.array([canvas / 2, canvas / 2]) + shift
    center_in = np.array([image.width / 2, image.height / 2])
    offset = center_in - inverse @ center_out
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    warped = image.transform((canvas, canvas), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    small = warped.resize((size, size), Image.Resampling.BOX)
    blur = rng.uniform(0.0, 0.8) * strength
    if blur > 0.3:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    ink = np.asarray(small, dtype=np.float32) / 255.0
    background, foreground = rng.uniform(0, 80 * strength), rng.uniform(255 - 90 * strength, 255)
    noise = rng.normal(0.0, rng.uniform(0, 20 * strength), size=ink.shape)
    return background + (foreground - background) * ink + noise


def render_glyphs(n_per_class: int, seed: int, size: int = DEFAULT_SIZE, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """`n_per_class` images of every class: x uint8 (N, size, size), y int64 (N,), classes
    interleaved (y = 0, 1, ..., C-1, 0, 1, ...) so any prefix is nearly balanced. Fonts are
    drawn at random per image. `strength` scales every distortion (1.0: the benchmark's)."""
    if n_per_class < 0 or size < 8 or strength < 0:
        raise BadSpecError(f"render_glyphs needs n_per_class >= 0, size >= 8, strength >= 0 (got {n_per_class}, {size}, {strength})")
    masters = _masters()
    rng = np.random.default_rng(seed)
    classes = len(CLASSES)
    labels = np.tile(np.arange(classes, dtype=np.int64), n_per_class)
    fonts = rng.integers(0, len(masters), size=len(labels))
    images = np.empty((len(labels), size, size), dtype=np.uint8)
    for index, (label, font) in enumerate(zip(labels, fonts)):
        rendered = _render_one(masters[font][label], rng, size, strength)
        images[index] = np.clip(np.rint(rendered), 0, 255).astype(np.uint8)
    return images, labels


UNLABELED_SEED_OFFSET = 7919
"""The unlabeled images come from their own stream (seed + this), apart from both labelled
splits and from the teacher's images."""


def make_pruning_dataset(path: str | Path, n_train_per_class: int = 5, n_val_per_class: int = 40, seed: int = 0,
                         size: int = DEFAULT_SIZE, n_unlabeled_per_class: int = 0) -> Path:
    """Write the pruning task as an .npz with x_train, y_train, x_val, y_val (what
    `onnxwootz.data.load_dataset` reads) and, when asked, x_unlabeled: few labelled train
    images per class, enough val ones to resolve 0.5-point differences, and unlabeled images
    (cheap in the real world; the method's block pre-training needs no labels). Both labelled
    splits come from one seeded stream, so they never share an image; the teacher is trained
    on another seed."""
    if n_train_per_class <= 0 or n_val_per_class <= 0:
        raise BadSpecError(f"need at least one train and one val image per class (got {n_train_per_class}, {n_val_per_class})")
    x, y = render_glyphs(n_train_per_class + n_val_per_class, seed, size)
    cut = n_train_per_class * len(CLASSES)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:]}
    if n_unlabeled_per_class > 0:
        arrays["x_unlabeled"] = render_glyphs(n_unlabeled_per_class, seed + UNLABELED_SEED_OFFSET, size)[0]
    with open(path, "wb") as handle:  # a handle, so numpy never appends ".npz" to the name
        np.savez_compressed(handle, **arrays)
    return path
