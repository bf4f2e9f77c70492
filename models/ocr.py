"""Real-weight OCR teachers: PaddleOCR's text-orientation classifier, PP-OCRv4 text detector and
PP-OCRv4 recognizer, as the PyPI wheel rapidocr-onnxruntime==1.4.4 ships them.

The wheel is fetched once with pip (`pip download --no-deps`, never installed: it would pull the
CPU onnxruntime beside onnxruntime-gpu) into a cache folder, and the three .onnx files are taken
out of it with zipfile and checked by sha256, so a changed or corrupted download is an error,
not a silently different teacher. `python -m models.ocr` prints the three paths."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from onnxwootz.core.atomic import write_bytes
from onnxwootz.core.errors import BadModelError

PACKAGE = "rapidocr-onnxruntime"
VERSION = "1.4.4"
WHEEL = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
CACHE_ENV = "ONNXWOOTZ_CACHE"
"""Overrides the cache root (default ~/.cache/onnxwootz); the wheel and models go under rapidocr/."""

MODELS: dict[str, tuple[str, str]] = {
    "cls": ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    "det": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    "rec": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
}
"""name -> (member path inside the wheel, sha256 of the file as measured from the 1.4.4 wheel)."""


def default_cache() -> Path:
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "onnxwootz") / "rapidocr"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel(cache: Path) -> Path:
    """The cached wheel, downloaded by pip the first time."""
    wheel = cache / WHEEL
    if wheel.is_file():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download.") as staging:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   f"{PACKAGE}=={VERSION}", "-d", staging, "--quiet"]
        done = subprocess.run(command, capture_output=True, text=True)
        fetched = Path(staging) / WHEEL
        if done.returncode != 0 or not fetched.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise BadModelError(f"could not download {PACKAGE}=={VERSION} with pip (is PyPI reachable?): {last}")
        os.replace(fetched, wheel)
    return wheel


def ocr_model(name: str, cache: Path | None = None) -> Path:
    """Path to the verified .onnx file of teacher `name` ('cls', 'det' or 'rec'), fetching and
    extracting it into `cache` (default: default_cache()) on first use."""
    if name not in MODELS:
        raise BadModelError(f"unknown OCR model '{name}'; known: {', '.join(MODELS)}")
    member, expected = MODELS[name]
    cache = Path(cache) if cache is not None else default_cache()
    target = cache / Path(member).name
    if target.is_file() and _sha256(target) == expected:
        return target
    wheel = _wheel(cache)
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise BadModelError(f"{wheel} is not the {PACKAGE} {VERSION} wheel ({exc}); delete it to fetch it again") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise BadModelError(f"{member} in {wheel} has sha256 {actual}, expected {expected}; delete the wheel to fetch it again")
    return write_bytes(target, data)


if __name__ == "__main__":
    for model_name in MODELS:
        print(f"{model_name}\t{ocr_model(model_name)}")
