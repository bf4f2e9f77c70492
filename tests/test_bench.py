"""`bench` and `onnxwootz bench` on tiny generated conv nets: structure, sane numbers,
alternating runs, ratios, fixed-batch models, JSON = API result, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from onnxwootz.cli import app
from onnxwootz.core.errors import BadSpecError, DeviceError
from onnxwootz.runtime import bench as bench_module
from onnxwootz.runtime.bench import bench
from onnxwootz.runtime.sessions import pinned_session

TIMING_KEYS = {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput", "p50_ratio", "paired_ratio"}


def conv_net(channels: int, batch: int | str = "N", spatial: tuple[int | str, int | str] = (16, 16),
             name: str = "tiny") -> onnx.ModelProto:
    """Conv-Relu-Conv on a 3-channel image; `channels` sets the work, `batch` may be fixed."""
    rng = np.random.default_rng(channels)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, *spatial])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels, *spatial])
    weights = [numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w1"),
               numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, name, [x], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture()
def models(tmp_path: Path) -> dict[str, Path]:
    paths = {"small": tmp_path / "small.onnx", "big": tmp_path / "big.onnx", "fixed": tmp_path / "fixed.onnx"}
    onnx.save(conv_net(4), paths["small"])
    onnx.save(conv_net(64), paths["big"])
    onnx.save(conv_net(4, batch=1), paths["fixed"])
    return paths


def test_entries_are_sane(models):
    result = bench([models["small"]], batches=(1, 3), warmup=1, runs=7)
    assert [(e.model, e.batch) for e in result.entries] == [(str(models["small"]), 1), (str(models["small"]), 3)]
    for entry in result.entries:
        assert entry.runs == 7
        assert 0 < entry.p50_ms <= entry.p90_ms <= entry.p99_ms
        assert entry.mean_ms > 0 and entry.std_ms >= 0
        assert entry.throughput == pytest.approx(entry.batch * 1000.0 / entry.p50_ms)
        assert entry.providers == ["CPUExecutionProvider"]
    assert result.provider == "cpu" and result.threads == 1 and result.skipped == []
    assert result.session_options["intra_op_num_threads"] == 1
    assert result.session_options["inter_op_num_threads"] == 1
    assert result.session_options["execution_mode"] == "sequential"
    assert result.session_options["graph_optimization_level"] == "all"
    assert result.device
    assert [(r.batch, r.p50_ratio, r.paired_ratio) for r in result.ratios] == [(1, 1.0, 1.0), (3, 1.0, 1.0)]


def test_runs_alternate_between_models(models, monkeypatch):
    calls: list[tuple[str, int]] = []
    original = bench_module._Runner.run_once

    def recording(self):
        calls.append((self.label, len(next(iter(self.feed.values())))))
        original(self)

    monkeypatch.setattr(bench_module._Runner, "run_once", recording)
    a, b = str(models["small"]), str(models["big"])
    bench([a, b], batches=(1, 2), warmup=2, runs=3)
    # per batch: warm-up rounds run A then B; timed rounds alternate and rotate the turn order

    def rounds(batch: int) -> list:
        return [(a, batch), (b, batch)] * 2 + [(a, batch), (b, batch), (b, batch), (a, batch), (a, batch), (b, batch)]

    assert calls == rounds(1) + rounds(2)


def test_ratios_against_first_model(models):
    result = bench([models["small"], models["big"]], batches=(2,), warmup=2, runs=15)
    p50 = {e.model: e.p50_ms for e in result.entries}
    ratios = {r.model: r for r in result.ratios}
    small, big = str(models["small"]), str(models["big"])
    assert ratios[small].p50_ratio == 1.0 and ratios[small].paired_ratio == 1.0
    assert ratios[big].p50_ratio == pytest.approx(p50[big] / p50[small])
    # the big net does ~100x the MACs of the small one: slower by any measure
    assert ratios[big].p50_ratio > 1.5 and ratios[big].paired_ratio > 1.5


def test_fixed_batch_model_is_skipped_at_other_batches(models):
    fixed, small = str(models["fixed"]), str(models["small"])
    result = bench([fixed, small], batches=(1, 4), warmup=1, runs=3)
    assert [(e.model, e.batch) for e in result.entries] == [(fixed, 1), (small, 1), (small, 4)]
    assert [(s.model, s.batch, s.reason) for s in result.skipped] == [(fixed, 4, "input 'x' has a fixed batch of 1")]
    # no first-model figure at batch 4, so no ratios there
    assert {(r.model, r.batch) for r in result.ratios} == {(fixed, 1), (small, 1)}


def test_model_protos_and_repeated_models_get_distinct_labels(models):
    proto = conv_net(4, name="net")
    result = bench([proto, proto, models["small"]], warmup=1, runs=2)
    assert result.models == ["net", "net#2", str(models["small"])]
    assert [e.model for e in result.entries] == result.models


def test_input_shape_fills_dynamic_dims_and_batch_replaces_dim0():
    model = conv_net(4, spatial=("H", "W"))
    with pytest.raises(BadSpecError, match="input-shape"):
        bench([model], warmup=1, runs=1)
    result = bench([model], batches=(2,), input_shape=[1, 3, 8, 5], warmup=1, runs=2)
    assert [(e.batch, e.runs) for e in result.entries] == [(2, 2)]
    with pytest.raises(BadSpecError, match="has 3 dims"):
        bench([model], input_shape=[1, 3, 8], warmup=1, runs=1)
    # a shape the model's fixed dims reject shows up on the first run, as one line
    with pytest.raises(BadSpecError, match="cannot run at batch 2"):
        bench([conv_net(4)], batches=(2,), input_shape=[1, 3, 8, 8], warmup=1, runs=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"provider": "tpu"}, "unknown provider"),
    ({"batches": (0,)}, "batch sizes"),
    ({"batches": (2, 2)}, "repeat"),
    ({"runs": 0}, "runs"),
    ({"warmup": 0}, "warmup"),
    ({"threads": 0}, "threads"),
])
def test_bad_arguments_are_spec_errors(models, kwargs, message):
    with pytest.raises(BadSpecError, match=message):
        bench([models["small"]], **kwargs)


def test_gpu_provider_silently_dropped_is_a_device_error(monkeypatch):
    """onnxruntime-gpu may hand back a session on another provider; that must not pass as CUDA."""
    import onnxruntime as ort

    real = ort.InferenceSession

    def cpu_only(payload, options, providers):
        plain = ort.SessionOptions()
        return real(payload, plain, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", cpu_only)
    with pytest.raises(DeviceError, match="gave CPUExecutionProvider instead"):
        pinned_session(conv_net(4), "cuda")


def _structure(value):
    """Keys and types of a JSON value, with timing numbers reduced to their type."""
    if isinstance(value, dict):
        return {k: (type(v).__name__ if k in TIMING_KEYS else _structure(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_structure(v) for v in value]
    return value


def test_json_output_matches_api_result(models):
    args = [str(models["small"]), str(models["fixed"])]
    expected = bench(args, batches=(1, 2), warmup=1, runs=3).to_dict()
    out = CliRunner().invoke(app, ["bench", *args, "--batch", "1,2", "--warmup", "1", "--runs", "3", "--json"])
    assert out.exit_code == 0, out.output
    assert _structure(json.loads(out.stdout)) == _structure(expected)


def test_table_for_people(models):
    out = CliRunner().invoke(app, ["bench", str(models["small"]), str(models["fixed"]), "--batch", "1,2",
                                   "--warmup", "1", "--runs", "2"])
    assert out.exit_code == 0, out.output
    assert "p50 ms" in out.stdout and "vs first" in out.stdout and "1.000x" in out.stdout
    assert "input 'x' has a fixed batch of 1" in out.stdout


def _one_line_error(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert "Traceback" not in out.output
    return lines[0]


def test_missing_file_exits_2(tmp_path):
    out = CliRunner().invoke(app, ["bench", str(tmp_path / "missing.onnx")])
    assert out.exit_code == 2
    assert "not found" in _one_line_error(out)


@pytest.mark.parametrize("option", [["--batch", "1,x"], ["--threads", "0"], ["--input-shape", "1,a"]])
def test_bad_options_exit_4(models, option):
    out = CliRunner().invoke(app, ["bench", str(models["small"]), *option])
    assert out.exit_code == 4
    _one_line_error(out)


def test_cuda_without_gpu_exits_5_with_one_line(models):
    """A real process, so ONNX Runtime's own prints and logs (stdout, the stderr descriptor)
    would show; CUDA_VISIBLE_DEVICES hides any GPU so the answer is the same everywhere."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", "from onnxwootz.cli import main; main()", "bench",
                           str(models["small"]), "--provider", "cuda", "--runs", "1", "--warmup", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 5
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: CUDAExecutionProvider cannot run here"), done.stderr
