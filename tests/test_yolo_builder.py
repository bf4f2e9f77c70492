"""The YOLOv8-style detector builder (ultralytics cannot be imported here: it requires
torchvision, which does not load beside this torch): YOLOv8n's size, exports that ONNX Runtime
runs with torch's outputs at any batch, single- and multi-output, and pruning that keeps the
outputs' shapes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from models.builders import DETECTORS, build, example_input, yolo_v8
from models.export import EXPORTERS, cached_export
from onnxwootz.core.modelio import load_model
from onnxwootz.pruning import apply
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.runtime.torch_graph import TorchGraph


def _torch(name: str, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = build(name)(x)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _ort(model: onnx.ModelProto, x: torch.Tensor) -> list[np.ndarray]:
    session = cpu_session(model)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def test_full_size_is_yolov8n() -> None:
    """ultralytics' yolov8n.yaml at 80 classes: 3,157,184 trainable parameters (its summary's
    3,157,200 adds the 16 frozen DFL weights, a buffer here), 84 rows per anchor."""
    model = yolo_v8().eval()
    assert sum(p.numel() for p in model.parameters()) == 3_157_184
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 320, 320)).shape == (1, 84, 40 * 40 + 20 * 20 + 10 * 10)


@pytest.mark.parametrize(("name", "exporter"), [("yolo_v8", exporter) for exporter in EXPORTERS] + [("yolo_v8_heads", "legacy")])
def test_export_matches_torch_at_batch_1_and_2(name: str, exporter: str) -> None:
    model = cached_export(name, exporter)
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.output) == (3 if name == "yolo_v8_heads" else 1)
    assert all(value.type.tensor_type.shape.dim[0].dim_param for value in model.graph.output)
    for batch in (1, 2):
        x = example_input(batch, seed=batch)
        for got, expected in zip(_ort(model, x), _torch(name, x), strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-4)
    with torch.no_grad():
        view = TorchGraph(model).eval()(example_input(2))
    for got, expected in zip(view if isinstance(view, tuple) else (view,), _torch(name, example_input(2)), strict=True):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_pruning_keeps_every_output_shape(name: str, tmp_path) -> None:
    model = cached_export(name, "legacy")
    result = apply(model, rate=0.5, output=tmp_path / "pruned.onnx")
    pruned = load_model(tmp_path / "pruned.onnx")
    onnx.checker.check_model(pruned, full_check=True)
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    x = example_input(2, seed=4)
    assert [a.shape for a in _ort(pruned, x)] == [b.shape for b in _ort(model, x)]
