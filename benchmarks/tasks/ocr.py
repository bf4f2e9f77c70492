"""OCR pruning data rendered from installed fonts (no downloads), for PaddleOCR's real-weight
teachers (models/ocr.py): text-orientation crops (class folders 0deg/180deg), text-line crops
with their strings (labels.tsv) and label-free scenes for the detector. Every renderer is a pure
function of its seed (same Pillow/FreeType build) and writes ROOT/train, ROOT/val, ROOT/test.

Why the data looks like this: the teachers were trained on real photographed and scanned text,
so the renderings imitate detector crops (a text line with a small margin, light uneven
backgrounds, coloured ink, mild blur and noise) and scenes (several lines at random sizes and
small angles over textured, cluttered backgrounds). The figures below are what the teachers
score on it, measured with ONNX Runtime (CPU) and exactly the preprocessing in PREPROCESS:

    python -m benchmarks.tasks.ocr --check

Measured on the 200 test images of seed 0 (ONNX Runtime 1.31 CPU, onnxwootz.preprocess):
- cls: top-1 0.98 (target >= 0.95);
- rec: exact strings 0.975, characters 0.996 (target >= 0.8); the misses are dropped spaces,
  one dropped letter, j/i, ',' read as '.', and "so" read as "SO";
- det (160x160, 772 lines): the thresholded (0.3) map covers the centre line of 96.0% of the
  lines (mean covered fraction 0.94), 99.7% of its on-pixels lie inside the lines' boxes, mean
  map 0.059 (5.9% of pixels on); rapidocr's 0.5/0.5 normalization gives the same (96.0%).
Costs per image (2 threads, on a shared machine, so wall times are high: CPU seconds / 2 is the
wall time on 2 idle cores), from `--check --timing --timing-batch 32`: cls ORT 0.005 CPU-s,
torch view forward + backward 0.06 CPU-s; det 160x160 ORT 0.024, torch 0.18; rec ORT 0.09,
torch 0.37 (batch 8). The rec figure was measured before TorchGraph built that view from the
file (it now takes the ranks the computed Reshape in front of Slice p2o.Slice.4 loses from
example shapes), with every Reshape's shape made a constant from prepare()'s static shapes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from benchmarks.tasks.render import matplotlib_font_dir
from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.data import LABELS_FILE, SPLITS
from onnxwootz.preprocess import PRESETS

CLS_CLASSES = ("0deg", "180deg")
"""Folder names; sorted they give index 0 = upright ('0'), 1 = rotated ('180'): the teacher's order."""

_BGR_HALF = {"channels": 3, "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "order": "BGR"}
PREPROCESS: dict[str, dict] = {
    "cls": {"size": [48, 192], **_BGR_HALF, "resize": "pad"},
    "rec": {"size": [48, 320], **_BGR_HALF, "resize": "pad"},
    "det": {"size": [160, 160], **_BGR_HALF, "mean": list(PRESETS["imagenet"]["mean"]),
            "std": list(PRESETS["imagenet"]["std"]), "resize": "stretch"},
}
"""The preprocessing of each teacher, in the loader's --preprocess JSON format. cls and rec are
PaddleOCR's resize_norm_img (rapidocr 1.4.4, images read BGR by cv2): keep the aspect ratio at
height 48, width at most W, (x/255 - 0.5)/0.5, pad right with 0. det uses PaddleOCR's own
training normalization (ImageNet mean/std applied in the BGR image's channel order, as
PaddleOCR's NormalizeImage does), which finds slightly more lines on this data than rapidocr's
mean = std = 0.5 (`--det-mean-std half`) at 256x256 (98% of the lines against 96% on 100
scenes) and ties with it at 160x160; scenes are rendered at the model size, so the resize is
the identity. 160x160 keeps the detector's cost within the pruning budget while it still
finds about 96% of the lines (128x128: 93%, 256x256: 96-98%)."""
DET_SIZE = (160, 160)
LINE_HEIGHT = 48

_SYSTEM_FONTS = Path("/usr/share/fonts/truetype/dejavu")
_FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf", "DejaVuSansCondensed-Oblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSerifCondensed.ttf", "DejaVuSerifCondensed-Bold.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)
"""Text faces with the usual ASCII glyphs (the Computer Modern and symbol files map some ASCII
codes to other glyphs, so their exact text would be wrong). DejaVu comes from the system when
installed, else from matplotlib, which also bundles STIX."""

_CONSONANTS = "bcdfghjkmnprstvwxyz"
_VOWELS = "aeiou"
_PUNCT = ".,:-/%$()&#+'!?"
TEXT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 " + _PUNCT)
"""Every character a rendered string may hold; all are in PP-OCRv4's dictionary."""


@dataclass(frozen=True)
class RenderSummary:
    """What a renderer wrote: the dataset root and the image count per split (and per class)."""

    root: Path
    counts: dict[str, int]
    classes: tuple[str, ...] = ()
    class_counts: dict[str, dict[str, int]] | None = None


# ---------------------------------------------------------------- fonts and strings


def _font_dirs() -> tuple[Path, ...]:
    return (_SYSTEM_FONTS, matplotlib_font_dir())


@lru_cache(maxsize=1)
def font_paths() -> tuple[Path, ...]:
    """The text faces found, one file per name (the system copy first)."""
    found = []
    for name in _FONT_FILES:
        path = next((d / name for d in _font_dirs() if (d / name).is_file()), None)
        if path is not None:
            found.append(path)
    if len(found) < 4:
        raise BadDataError(f"only {len(found)} text fonts found in {', '.join(map(str, _font_dirs()))}; the OCR task needs DejaVu or matplotlib's fonts")
    return tuple(found)


@lru_cache(maxsize=512)
def _font(path: Path, px: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(path), px)


def _pseudo_word(rng: np.random.Generator) -> str:
    """A pronounceable lowercase word of 1-4 syllables: looks like text to a model trained on text."""
    syllables = int(rng.integers(1, 4))
    parts = []
    for _ in range(syllables):
        part = rng.choice(list(_CONSONANTS)) + rng.choice(list(_VOWELS))
        if rng.random() < 0.3:
            part += rng.choice(list(_CONSONANTS))
        parts.append(part)
    return "".join(parts)


def _token(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.45:
        word = _pseudo_word(rng)
    elif kind < 0.6:
        word = _pseudo_word(rng).capitalize()
    elif kind < 0.68:
        word = _pseudo_word(rng).upper()
    elif kind < 0.8:
        word = str(int(rng.integers(0, 10 ** int(rng.integers(1, 6)))))
    else:
        a, b, c = (int(v) for v in rng.integers(0, 100, size=3))
        word = rng.choice([f"{a}.{b:02d}", f"{a % 24:02d}:{b % 60:02d}", f"20{a:02d}-{b % 12 + 1:02d}-{c % 28 + 1:02d}",
                           f"{a}%", f"${a}.{b:02d}", f"No.{a}", f"({a})", f"{a}/{b}", f"#{a}{b}"])
    if rng.random() < 0.12:
        word += rng.choice(list(".,:!?"))
    return word


def text_line(rng: np.random.Generator, max_words: int = 3) -> str:
    """A short line of words, numbers and punctuation from TEXT_CHARS."""
    return " ".join(_token(rng) for _ in range(int(rng.integers(1, max_words + 1))))


# ---------------------------------------------------------------- drawing


def _ink_mask(text: str, font_path: Path, px: int) -> np.ndarray:
    """The text's coverage (float32 in [0, 1]) cropped to the font's line box."""
    from PIL import Image, ImageDraw

    font = _font(font_path, px)
    left, top, right, bottom = font.getbbox(text)
    ascent, descent = font.getmetrics()
    top, bottom = min(top, 0), max(bottom, ascent + descent)
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=255)
    return np.asarray(mask, dtype=np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random grid enlarged bilinearly."""
    from PIL import Image

    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    image = Image.fromarray((grid * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255.0


def _light_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An uneven, lightly tinted paper-like background (float32 HxWx3 in [0, 255])."""
    base = rng.uniform(170, 250) + rng.uniform(-12, 12, size=3)
    shade = _smooth_noise(rng, height, width, int(rng.integers(1, 4)))[..., None]
    return np.clip(base - rng.uniform(0, 45) * shade, 0, 255).astype(np.float32)


def _ink_colour(rng: np.random.Generator, background: float) -> np.ndarray:
    """A colour with strong luminance contrast to `background` (mostly dark, sometimes tinted)."""
    if background > 128:
        level = rng.uniform(0, max(10.0, background - 120))
    else:
        level = rng.uniform(min(245.0, background + 120), 255)
    tint = rng.uniform(-40, 40, size=3) if rng.random() < 0.4 else np.zeros(3)
    return np.clip(level + tint, 0, 255).astype(np.float32)


def _composite(background: np.ndarray, mask: np.ndarray, colour: np.ndarray, top: int, left: int) -> None:
    """Paint `colour` through `mask` onto `background` in place at (top, left), clipped."""
    height, width = mask.shape
    region = background[top:top + height, left:left + width]
    alpha = mask[:region.shape[0], :region.shape[1], None]
    region *= 1.0 - alpha
    region += alpha * colour


def _finish(rng: np.random.Generator, image: np.ndarray, blur: float, noise: float) -> np.ndarray:
    """Mild camera blur and sensor noise, then uint8."""
    from PIL import Image, ImageFilter

    out = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    radius = rng.uniform(0, blur)
    if radius > 0.2:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    pixels = np.asarray(out, dtype=np.float32) + rng.normal(0, rng.uniform(0, noise), size=image.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def line_crop(rng: np.random.Generator, text: str, max_width: int | None = None) -> np.ndarray | None:
    """`text` as a detector-style crop: height LINE_HEIGHT, a small margin, width from the text
    (RGB uint8 HxWx3); None when it would be wider than `max_width`."""
    from PIL import Image

    font_path = font_paths()[int(rng.integers(len(font_paths())))]
    mask = _ink_mask(text, font_path, int(rng.integers(28, 44)))
    pad_y = rng.uniform(0.05, 0.2) * mask.shape[0]
    pad_x = rng.uniform(0.02, 0.12) * mask.shape[0]
    scale = LINE_HEIGHT / (mask.shape[0] + 2 * pad_y)
    width = max(8, int(round((mask.shape[1] + 2 * pad_x) * scale * rng.uniform(0.85, 1.15))))
    if max_width is not None and width > max_width:
        return None
    inner_h = max(1, int(round(mask.shape[0] * scale)))
    inner_w = max(1, int(round(mask.shape[1] * (width / (mask.shape[1] + 2 * pad_x)))))
    mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize((min(inner_w, width), inner_h), Image.Resampling.BILINEAR),
                      dtype=np.float32) / 255.0
    background = _light_background(rng, LINE_HEIGHT, width)
    top = int(np.clip(round((LINE_HEIGHT - inner_h) / 2 + rng.uniform(-2, 2)), 0, LINE_HEIGHT - inner_h))
    left = int(np.clip(round((width - mask.shape[1]) / 2 + rng.uniform(-2, 2)), 0, width - mask.shape[1]))
    _composite(background, mask, _ink_colour(rng, float(background.mean())), top, left)
    return _finish(rng, background, blur=0.9, noise=6.0)


# ---------------------------------------------------------------- detector scenes


def _textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A scene background: a smooth colour field plus non-text clutter (bars, boxes, lines, blobs)."""
    from PIL import Image, ImageDraw

    base = rng.uniform(40, 240, size=3)
    field = base + rng.uniform(-60, 60, size=3) * (_smooth_noise(rng, height, width, int(rng.integers(2, 6)))[..., None] - 0.5) * 2
    canvas = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 8))):
        colour = tuple(int(v) for v in np.clip(base + rng.uniform(-70, 70, size=3), 0, 255))
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, size=2))
        kind = rng.random()
        if kind < 0.35:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind < 0.6:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 5)))
    return np.asarray(canvas, dtype=np.float32)


def _rotate(mask: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate `mask` counter-clockwise (canvas enlarged to fit) and give the corners of the
    original rectangle in the rotated canvas (4x2, x then y, clockwise from top-left)."""
    from PIL import Image

    height, width = mask.shape
    rotated = Image.fromarray((mask * 255).astype(np.uint8)).rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True)
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64) - (width / 2, height / 2)
    turned = np.stack([corners[:, 0] * cos + corners[:, 1] * sin, -corners[:, 0] * sin + corners[:, 1] * cos], axis=1)
    return np.asarray(rotated, dtype=np.float32) / 255.0, turned + (rotated.width / 2, rotated.height / 2)


def det_scene(rng: np.random.Generator, size: tuple[int, int] = DET_SIZE, lines: tuple[int, int] = (2, 6)) -> tuple[np.ndarray, list[np.ndarray]]:
    """One scene (RGB uint8 HxWx3) and the quadrilateral (4x2, pixels) of each text line's ink
    box; lines do not overlap."""
    height, width = size
    image = _textured_background(rng, height, width)
    taken = np.zeros((height, width), dtype=bool)
    boxes = []
    for _ in range(int(rng.integers(lines[0], lines[1] + 1))):
        for _attempt in range(12):
            px = int(rng.integers(max(10, height // 24), max(12, height // 8)))
            text = text_line(rng, max_words=3)
            mask = _ink_mask(text, font_paths()[int(rng.integers(len(font_paths())))], px)
            if mask.shape[1] > 0.9 * width:
                continue
            angle = float(rng.uniform(-20, 20)) if rng.random() < 0.6 else 0.0
            rotated, corners = _rotate(mask, angle)
            rh, rw = rotated.shape
            if rh >= height or rw >= width:
                continue
            top, left = int(rng.integers(0, height - rh)), int(rng.integers(0, width - rw))
            if taken[max(0, top - 3):top + rh + 3, max(0, left - 3):left + rw + 3].any():
                continue
            taken[top:top + rh, left:left + rw] = True
            local = image[top:top + rh, left:left + rw].reshape(-1, 3).mean()
            _composite(image, rotated, _ink_colour(rng, float(local)), top, left)
            boxes.append(corners + (left, top))
            break
    return _finish(rng, image, blur=0.8, noise=5.0), boxes


# ---------------------------------------------------------------- writing datasets


def _split_rngs(seed: int, task: int) -> dict[str, np.random.Generator]:
    """One independent stream per split, so that changing one split's size leaves the others."""
    return {split: np.random.default_rng((seed, task, index)) for index, split in enumerate(SPLITS)}


def _counts(n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    counts = dict(zip(SPLITS, (n_train, n_val, n_test)))
    for split, n in counts.items():
        if not isinstance(n, int) or n < 0:
            raise BadSpecError(f"the {split} image count must be a non-negative integer, got {n!r}")
    return counts


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="PNG")


def _atomic_tree(root: Path, fill: Callable[[Path], None]) -> None:
    """Build the dataset in a sibling temp folder and rename it into place, so that an
    interrupted render never leaves a half-written dataset at `root`."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise BadSpecError(f"{root} already exists and is not empty; give a new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        fill(staging)
        if root.exists():
            root.rmdir()
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def cls_samples(rng: np.random.Generator, n: int) -> Iterator[tuple[np.ndarray, int]]:
    """`n` (crop, class index) pairs, classes alternating so every split is balanced; class 1
    is the same kind of crop turned 180 degrees."""
    for index in range(n):
        crop = None
        while crop is None:
            crop = line_crop(rng, text_line(rng, max_words=3), max_width=320)
            if crop is not None and crop.shape[1] < 100:
                crop = None
        label = index % 2
        yield (crop[::-1, ::-1].copy() if label else crop), label


def rec_samples(rng: np.random.Generator, n: int) -> Iterator[tuple[np.ndarray, str]]:
    """`n` (crop, exact text) pairs whose crops fit 48x320 without squeezing."""
    for _ in range(n):
        crop = None
        while crop is None:
            text = text_line(rng, max_words=3)
            crop = line_crop(rng, text, max_width=320)
        yield crop, text


def render_cls(root: str | os.PathLike[str], n_train: int = 400, n_val: int = 200, n_test: int = 200, seed: int = 0) -> RenderSummary:
    """Orientation crops in class folders: ROOT/<split>/{0deg,180deg}/NNNNN.png."""
    counts = _counts(n_train, n_val, n_test)
    rngs = _split_rngs(seed, 0)
    per_class: dict[str, dict[str, int]] = {}

    def fill(staging: Path) -> None:
        for split, n in counts.items():
            per_class[split] = {name: 0 for name in CLS_CLASSES}
            for name in CLS_CLASSES:
                (staging / split / name).mkdir(parents=True)
            for index, (crop, label) in enumerate(cls_samples(rngs[split], n)):
                _write_png(staging / split / CLS_CLASSES[label] / f"{index:05d}.png", crop)
                per_class[split][CLS_CLASSES[label]] += 1

    _atomic_tree(Path(root), fill)
    return RenderSummary(Path(root), counts, CLS_CLASSES, per_class)


def render_rec(root: str | os.PathLike[str], n_train: int = 400, n_val: int = 200, n_test: int = 200, seed: int = 0) -> RenderSummary:
    """Text-line crops with their strings: ROOT/<split>/NNNNN.png and ROOT/<split>/labels.tsv."""
    counts = _counts(n_train, n_val, n_test)
    rngs = _split_rngs(seed, 1)

    def fill(staging: Path) -> None:
        for split, n in counts.items():
            (staging / split).mkdir(parents=True)
            rows = []
            for index, (crop, text) in enumerate(rec_samples(rngs[split], n)):
                name = f"{index:05d}.png"
                _write_png(staging / split / name, crop)
                rows.append(f"{name}\t{text}\n")
            (staging / split / LABELS_FILE).write_text("".join(rows), encoding="utf-8")

    _atomic_tree(Path(root), fill)
    return RenderSummary(Path(root), counts)


def render_det(root: str | os.PathLike[str], n_train: int = 200, n_val: int = 100, n_test: int = 100,
               size: tuple[int, int] = DET_SIZE, seed: int = 0) -> RenderSummary:
    """Label-free scenes at the model size: ROOT/<split>/NNNNN.png."""
    counts = _counts(n_train, n_val, n_test)
    if len(size) != 2 or any(not isinstance(s, int) or s < 64 or s % 32 for s in size):
        raise BadSpecError(f"det scenes need a size [H, W] of multiples of 32, at least 64, got {size!r}")
    rngs = _split_rngs(seed, 2)

    def fill(staging: Path) -> None:
        for split, n in counts.items():
            (staging / split).mkdir(parents=True)
            for index in range(n):
                image, _ = det_scene(rngs[split], size)
                _write_png(staging / split / f"{index:05d}.png", image)

    _atomic_tree(Path(root), fill)
    return RenderSummary(Path(root), counts)


def det_preprocess(size: tuple[int, int] = DET_SIZE) -> dict:
    return {**PREPROCESS["det"], "size": [int(size[0]), int(size[1])]}


# ---------------------------------------------------------------- teacher check


def preprocess_images(spec: dict, images: list[np.ndarray]) -> np.ndarray:
    """RGB uint8 images of any size -> the teacher's float32 NCHW input, by the project's own
    Preprocess (what the pruning loader applies to the written files)."""
    from onnxwootz.preprocess import Preprocess

    return Preprocess.from_dict(spec).apply(images)


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def text_scores(predicted: list[str], truth: list[str]) -> tuple[float, float]:
    """(exact-string accuracy, character accuracy = 1 - total edit distance / total length)."""
    exact = float(np.mean([p == t for p, t in zip(predicted, truth)]))
    edits = sum(_edit_distance(p, t) for p, t in zip(predicted, truth))
    return exact, 1.0 - edits / max(1, sum(len(t) for t in truth))


def box_coverage(prob: np.ndarray, boxes: list[np.ndarray], threshold: float = 0.3) -> np.ndarray:
    """Per box, the fraction of its centre line (from 10% to 90% of its length) where the
    thresholded map is on. DBNet's map marks a shrunk core of each line, so the centre line is
    what a working detector covers."""
    on = prob > threshold
    height, width = on.shape
    fractions = []
    for box in boxes:
        start, end = (box[0] + box[3]) / 2, (box[1] + box[2]) / 2
        t = np.linspace(0.1, 0.9, 33)[:, None]
        points = np.rint(start + t * (end - start)).astype(int)
        xs, ys = np.clip(points[:, 0], 0, width - 1), np.clip(points[:, 1], 0, height - 1)
        fractions.append(on[ys, xs].mean())
    return np.asarray(fractions)


def _inside_boxes(size: tuple[int, int], boxes: list[np.ndarray]) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for box in boxes:
        draw.polygon([tuple(point) for point in box.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _run(session, x: np.ndarray, batch: int = 16) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def _timings(path: Path, input_shape: list[int], threads: int = 2, warmup: int = 2, repeats: int = 3) -> dict[str, object]:
    """Per image, the fastest of `repeats` timings: the teacher's ORT inference (CPU, `threads`)
    and its torch view's forward + backward at batch input_shape[0], as wall and CPU seconds
    (CPU / threads is the wall time on idle cores)."""
    import torch

    from onnxwootz.core.errors import UnsupportedOpError
    from onnxwootz.prepared import prepare
    from onnxwootz.runtime.sessions import cpu_session
    from onnxwootz.runtime.torch_graph import TorchGraph

    batch = input_shape[0]
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)

    def measure(step: Callable[[], object]) -> tuple[float, float]:
        walls, cpus = [], []
        for index in range(warmup + repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            if index >= warmup:
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
        return min(walls) / batch, min(cpus) / batch

    session = cpu_session(str(path), threads=threads)
    timings: dict[str, object] = {}
    timings["ort_wall_s"], timings["ort_cpu_s"] = measure(lambda: _run(session, x, batch))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prepared = prepare(path, input_shape)
        graph = TorchGraph(prepared.model, prepared.feed_shapes).train()
        tensor = torch.from_numpy(x)

        def step() -> None:
            out = graph(tensor)
            (out[0] if isinstance(out, tuple) else out).float().square().mean().backward()

        timings["torch_fwd_bwd_wall_s"], timings["torch_fwd_bwd_cpu_s"] = measure(step)
    except UnsupportedOpError as exc:
        timings["torch_view"] = str(exc)
    finally:
        torch.set_num_threads(previous)
    return timings


def check_cls(path: Path, n: int, seed: int = 0) -> dict[str, float]:
    from onnxwootz.runtime.sessions import cpu_session

    crops, labels = zip(*cls_samples(_split_rngs(seed, 0)["test"], n))
    scores = _run(cpu_session(str(path), threads=2), preprocess_images(PREPROCESS["cls"], list(crops)))
    return {"images": n, "top1": float(np.mean(scores.argmax(axis=1) == np.asarray(labels)))}


def check_rec(path: Path, n: int, seed: int = 0) -> dict[str, object]:
    from onnxwootz.core.modelio import load_model
    from onnxwootz.ctc import charset_of, ctc_greedy_decode
    from onnxwootz.runtime.sessions import cpu_session

    crops, texts = zip(*rec_samples(_split_rngs(seed, 1)["test"], n))
    scores = _run(cpu_session(str(path), threads=2), preprocess_images(PREPROCESS["rec"], list(crops)))
    predicted = ctc_greedy_decode(scores, charset_of(load_model(path), scores.shape[2]))
    exact, chars = text_scores(predicted, list(texts))
    errors = [(t, p) for t, p in zip(texts, predicted) if t != p][:8]
    return {"images": n, "exact": exact, "char": chars, "errors": errors}


def check_det(path: Path, n: int, size: tuple[int, int] = DET_SIZE, seed: int = 0, spec: dict | None = None) -> dict[str, float]:
    from onnxwootz.runtime.sessions import cpu_session

    rng = _split_rngs(seed, 2)["test"]
    scenes = [det_scene(rng, size) for _ in range(n)]
    spec = spec or det_preprocess(size)
    prob = _run(cpu_session(str(path), threads=2), preprocess_images(spec, [image for image, _ in scenes]))[:, 0]
    coverage = np.concatenate([box_coverage(p, boxes) for p, (_, boxes) in zip(prob, scenes)])
    on = prob > 0.3
    inside = np.stack([_inside_boxes(size, boxes) for _, boxes in scenes])
    return {"images": n, "boxes": int(len(coverage)), "found": float(np.mean(coverage >= 0.5)),
            "mean_coverage": float(coverage.mean()), "mean_map": float(prob.mean()),
            "on_fraction": float(on.mean()), "on_inside_boxes": float((on & inside).sum() / max(1, on.sum()))}


def main(argv: list[str] | None = None) -> None:
    from models.ocr import ocr_model

    parser = argparse.ArgumentParser(description="Render OCR data and measure the real teachers on it.")
    parser.add_argument("--check", action="store_true", help="measure each teacher on rendered test images")
    parser.add_argument("--n", type=int, default=200, help="images per model for --check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--det-size", type=int, nargs=2, default=list(DET_SIZE), metavar=("H", "W"))
    parser.add_argument("--det-mean-std", choices=("half", "imagenet"), default="imagenet",
                        help="det normalization: PaddleOCR's ImageNet mean/std or rapidocr's 0.5/0.5")
    parser.add_argument("--timing", action="store_true", help="also time ORT inference and torch forward+backward")
    parser.add_argument("--timing-batch", type=int, default=8, help="batch size of the timings")
    parser.add_argument("--models", default="cls,det,rec")
    args = parser.parse_args(argv)
    if not args.check:
        parser.error("nothing to do: give --check")
    size = (args.det_size[0], args.det_size[1])
    report: dict[str, object] = {}
    for name in args.models.split(","):
        path = ocr_model(name)
        start = time.perf_counter()
        if name == "cls":
            result: dict = check_cls(path, args.n, args.seed)
        elif name == "rec":
            result = check_rec(path, args.n, args.seed)
        else:
            spec = det_preprocess(size)
            if args.det_mean_std == "half":
                spec = {**spec, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
            result = check_det(path, args.n, size, args.seed, spec)
        result["check_s"] = round(time.perf_counter() - start, 2)
        if args.timing:
            shape = [args.timing_batch, 3, *(PREPROCESS[name]["size"] if name != "det" else size)]
            result.update(_timings(path, shape))
        report[name] = result
        print(name, json.dumps(result))


if __name__ == "__main__":
    main()
