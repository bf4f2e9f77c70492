"""The Python API is what the CLI prints: each function's `to_dict()` equals its command's
`--json` on the same input; `import onnxwootz` stays light (no torch); the example deployment
pipeline runs and fails as designed when its gate is out of reach."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import onnxwootz
from onnxwootz.cli import app

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "models" / "digits_resnet.onnx"
TIMING_KEYS = {"wall_seconds", "pretrain_seconds", "seconds", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
               "throughput", "paired_ratio", "p50_ratio", "latency_p50_ms"}


def _cli_json(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_analyze_json_is_the_api_result() -> None:
    assert _cli_json("analyze", str(TEACHER)) == onnxwootz.analyze(str(TEACHER)).to_dict()


def test_apply_json_is_the_api_result(tmp_path: Path) -> None:
    args = dict(output=tmp_path / "p.onnx", plan=tmp_path / "plan.json")
    expected = onnxwootz.apply(str(TEACHER), rate=0.5, **args).to_dict()
    got = _cli_json("apply", str(TEACHER), "--rate", "0.5", "-o", str(args["output"]), "--plan", str(args["plan"]))
    assert got == expected
    plan = json.loads(args["plan"].read_text())
    assert set(plan) == {"schema", "config", "slices"} and plan["config"] == expected["config"]


def test_subspace_and_blocks_json_are_the_api_results(tmp_path: Path) -> None:
    configs = tmp_path / "configs.json"
    expected = onnxwootz.subspace(str(TEACHER), 6, [0.3, 0.5, 0.7], 1, configs).to_dict()
    assert _cli_json("subspace", str(TEACHER), "-n", "6", "--seed", "1", "-o", str(configs)) == expected
    assert _cli_json("blocks", str(configs), "--model", str(TEACHER)) == onnxwootz.blocks(
        str(configs), model=str(TEACHER)).to_dict()


def test_prune_json_is_the_api_result(tmp_path: Path) -> None:
    options = {"candidates": 3, "pretrain_steps": 10, "finetune_steps": 10}
    expected = onnxwootz.prune(str(TEACHER), run_dir=tmp_path / "api", constraint="accuracy >= teacher - 0.5",
                               **options).to_dict()
    got = _cli_json("prune", str(TEACHER), "--run-dir", str(tmp_path / "cli"), "--constraint",
                    "accuracy >= teacher - 0.5", "--candidates", "3", "--pretrain-steps", "10",
                    "--finetune-steps", "10")
    for result in (expected, got):
        result.pop("run_dir")
        result.pop("model")
    assert _without_timings(got) == _without_timings(expected)


def test_bench_json_has_the_api_shape() -> None:
    expected = onnxwootz.bench([str(TEACHER)], runs=3, warmup=1).to_dict()
    got = _cli_json("bench", str(TEACHER), "--runs", "3", "--warmup", "1")
    assert _without_timings(got) == _without_timings(expected)


def test_import_is_light_and_torch_free() -> None:
    code = ("import sys, time; t = time.perf_counter(); import onnxwootz; "
            "print(time.perf_counter() - t); assert 'torch' not in sys.modules and 'onnx' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 1.0


@pytest.mark.parametrize("speedup, code", [(0.0, 0), (1000.0, 6)])
def test_example_pipeline_gates(tmp_path: Path, speedup: float, code: int) -> None:
    deploy = tmp_path / "deploy"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "deploy_pipeline.py"), str(TEACHER), "--deploy-dir", str(deploy),
         "--min-speedup", str(speedup), "--run-dir", str(tmp_path / "run"), "--candidates", "3",
         "--pretrain-steps", "10", "--finetune-steps", "10", "--constraint", "accuracy >= teacher - 0.5"],
        capture_output=True, text=True)
    assert result.returncode == code, result.stderr
    if code == 0:
        assert (deploy / "model.onnx").exists() and json.loads(result.stdout)["speedup"] > 0
    else:
        assert "gate failed" in result.stderr and not (deploy / "model.onnx").exists()


def test_the_error_hierarchy_is_part_of_the_api(tmp_path: Path) -> None:
    """Pipelines catch what a call raises from `onnxwootz` itself, not from an internal module."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(onnxwootz.BadModelError) as raised:
        onnxwootz.analyze(str(broken))
    assert isinstance(raised.value, onnxwootz.WootzError)
    assert set(onnxwootz.__all__) >= {"WootzError", "BadSpecError", "PruningError", "prune"}
