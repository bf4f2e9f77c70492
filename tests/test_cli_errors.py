"""The `onnxwootz` command fails the way pipelines need: one clear line on stderr, a distinct exit
code (2 for a bad model, 4 for a bad configuration), no traceback unless `--debug`, and nothing
written at `-o`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from onnx import external_data_helper

from models.export import cached_export

EXECUTABLE = shutil.which("onnxwootz")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    assert EXECUTABLE, "the onnxwootz console script is not installed"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}  # wide enough that a line is not wrapped
    return subprocess.run([EXECUTABLE, *args], capture_output=True, text=True, timeout=120, env=env)


def _one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return cached_export("resnet18", "legacy").SerializeToString()


@pytest.fixture()
def good_model(tmp_path: Path, model_bytes: bytes) -> Path:
    path = tmp_path / "good.onnx"
    path.write_bytes(model_bytes)
    return path


def _non_onnx(tmp_path: Path, _: bytes) -> Path:
    path = tmp_path / "notes.onnx"
    path.write_text("not a model at all\n" * 10)
    return path


def _truncated(tmp_path: Path, model_bytes: bytes) -> Path:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(model_bytes[: len(model_bytes) // 2])
    return path


def _missing(tmp_path: Path, _: bytes) -> Path:
    return tmp_path / "nowhere.onnx"


def _escaping(tmp_path: Path, model_bytes: bytes) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save_model(onnx.load_from_string(model_bytes), str(path), save_as_external_data=True, location="m.data")
    (tmp_path / "m.data").write_bytes((folder / "m.data").read_bytes())
    model = onnx.load(str(path), load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../m.data"
    path.write_bytes(model.SerializeToString())
    return path


BAD_MODELS = {"non_onnx": _non_onnx, "truncated": _truncated, "missing": _missing, "escaping": _escaping}


@pytest.mark.parametrize("command", ["analyze", "apply"])
@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
def test_bad_model_is_one_line_exit_2(kind: str, command: str, tmp_path: Path, model_bytes: bytes) -> None:
    path = BAD_MODELS[kind](tmp_path, model_bytes)
    out = tmp_path / "out" / "pruned.onnx"
    args = [command, str(path)] + (["--rate", "0.5", "-o", str(out), "--plan", str(tmp_path / "PLAN.json")]
                                   if command == "apply" else [])
    line = _one_line_error(_cli(*args), 2)
    assert path.name in line or "outside" in line
    if kind == "escaping":
        assert "outside the model's folder" in line
    assert not out.exists() and not out.parent.exists()
    assert not (tmp_path / "PLAN.json").exists()


def _config(tmp_path: Path, content: object) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    return str(path)


BAD_SPECS = {
    "both": lambda tmp, units: ["--rate", "0.5", "--config", _config(tmp, [0.5] * len(units))],
    "neither": lambda tmp, units: [],
    "unknown_unit": lambda tmp, units: ["--config", _config(tmp, {"no-such-unit": 0.5})],
    "rate_one": lambda tmp, units: ["--rate", "1.0"],
    "rate_negative": lambda tmp, units: ["--rate=-0.1"],
    "config_rate_out_of_range": lambda tmp, units: ["--config", _config(tmp, {units[0]: 1.5})],
    "wrong_length": lambda tmp, units: ["--config", _config(tmp, [0.5] * (len(units) + 1))],
    "not_json": lambda tmp, units: ["--config", str(tmp / "broken.json")],
}


@pytest.mark.parametrize("kind", sorted(BAD_SPECS))
def test_bad_configuration_is_one_line_exit_4(kind: str, tmp_path: Path, good_model: Path) -> None:
    from onnxwootz.analysis import unit_names

    units = unit_names(good_model)
    (tmp_path / "broken.json").write_text("{not json")
    out = tmp_path / "pruned.onnx"
    _one_line_error(_cli("apply", str(good_model), "-o", str(out), *BAD_SPECS[kind](tmp_path, units)), 4)
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _cli("--debug", "analyze", str(tmp_path / "nowhere.onnx"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "BadModelError" in result.stderr


def test_good_apply_exits_0_and_writes(tmp_path: Path, good_model: Path) -> None:
    out = tmp_path / "pruned.onnx"
    result = _cli("apply", str(good_model), "--rate", "0.5", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == str(out)
    assert out.is_file()
