"""PaddleOCR's real trained models (text-orientation classifier, PP-OCRv4 detector and
recognizer) for tests, from the rapidocr-onnxruntime wheel on PyPI: downloaded once with pip
(never installed: it would pull the CPU onnxruntime), the three .onnx files extracted with
zipfile into a cache folder. A failure to get them is an error, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "rapidocr-onnxruntime==1.4.4"
NAMES = {"cls": "ch_ppocr_mobile_v2.0_cls_infer", "det": "ch_PP-OCRv4_det_infer", "rec": "ch_PP-OCRv4_rec_infer"}
EXTRACTED = Path("/tmp/rapid/rapidocr_onnxruntime/models")  # where a previous extraction may already be
CACHE = Path(os.environ.get("ONNXWOOTZ_CACHE", Path.home() / ".cache" / "onnxwootz")) / "rapidocr-1.4.4"


def ocr_model(kind: str) -> Path:
    """Path of the 'cls', 'det' or 'rec' model."""
    file = NAMES[kind] + ".onnx"
    for folder in (EXTRACTED, CACHE):
        if (folder / file).is_file():
            return folder / file
    _fetch()
    return CACHE / file


def _fetch() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    download = CACHE / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(download)],
                   check=True)
    wheel = next(download.glob("rapidocr_onnxruntime-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            name = Path(member).name
            if name in {n + ".onnx" for n in NAMES.values()}:
                partial = CACHE / (name + ".part")
                with archive.open(member) as source, open(partial, "wb") as target:
                    shutil.copyfileobj(source, target)
                partial.replace(CACHE / name)  # a torn download never looks like a model
    missing = [n for n in NAMES.values() if not (CACHE / (n + ".onnx")).is_file()]
    if missing:
        raise RuntimeError(f"{wheel.name} holds no {', '.join(missing)}")
