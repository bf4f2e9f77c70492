"""The reference builders match torchvision where they claim to, and both torch exporters give
graphs that ONNX Runtime runs with torch's outputs at any batch size."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from models.builders import BUILDERS, TEST_INPUT_SHAPE, build, example_input, mobilenet_v2, resnet18, resnet50, vgg_net
from models.export import EXPORTERS, cached_export, export, export_dynamo, export_legacy
from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.modelio import load_model
from onnxwootz.runtime.sessions import cpu_session


def _run(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    session = cpu_session(model)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _torch(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(x).numpy()


def _macs(module: nn.Module, shape: tuple[int, ...]) -> int:
    total = 0

    def count(layer: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total += out[0].numel() * (layer.in_channels // layer.groups) * kh * kw
        elif isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features

    hooks = [layer.register_forward_hook(count) for layer in module.modules()]
    _torch(module.eval(), torch.zeros(shape))
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_export_matches_torch_at_batch_1_and_2(name: str, exporter: str) -> None:
    model = cached_export(name, exporter)
    onnx.checker.check_model(model, full_check=True)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    module = build(name)
    for batch in (1, 2):
        x = example_input(batch, seed=batch)
        np.testing.assert_allclose(_run(model, x), _torch(module, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "shufflenet"])
def test_export_puts_the_module_in_eval_mode_and_folds_batchnorm(name: str) -> None:
    module = build(name).train()
    model = export_legacy(module, example_input(1))
    assert not module.training
    assert "BatchNormalization" not in {node.op_type for node in model.graph.node}
    x = example_input(3, seed=3)
    np.testing.assert_allclose(_run(model, x), _torch(module, x), rtol=1e-4, atol=1e-5)


def test_randomized_batchnorm_is_not_identity() -> None:
    bns = [m for m in build("resnet18").modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)) for bn in bns)
    assert all(not torch.allclose(bn.bias, torch.zeros_like(bn.bias)) for bn in bns)


def test_build_is_deterministic() -> None:
    x = example_input(2)
    np.testing.assert_array_equal(_torch(build("se_net"), x), _torch(build("se_net"), x))


def test_full_size_models_match_torchvision_counts() -> None:
    full = resnet50()
    assert sum(p.numel() for p in full.parameters()) == 25_557_032
    assert round(_macs(full, (1, 3, 224, 224)) / 1e9, 2) == 4.09
    assert sum(p.numel() for p in resnet18().parameters()) == 11_689_512
    assert sum(p.numel() for p in mobilenet_v2().parameters()) == 3_504_872


def test_vgg_flattens_a_spatial_map_into_linear() -> None:
    module = build("vgg_net")
    features = module.features(example_input(1))
    assert features.shape[2:] == (4, 4)
    first_linear = next(m for m in module.classifier if isinstance(m, nn.Linear))
    assert first_linear.in_features == features.shape[1] * 16


def test_every_builder_accepts_the_test_input_shape() -> None:
    for name in BUILDERS:
        assert _torch(build(name), torch.zeros(TEST_INPUT_SHAPE)).shape == (1, 10)


def test_dynamo_external_data_round_trips_through_load_model(tmp_path) -> None:
    torch.manual_seed(0)
    module = resnet18(num_classes=10, width=32).eval()
    path = tmp_path / "resnet18.onnx"
    model = export_dynamo(module, example_input(1), path, external_data=True)
    assert (tmp_path / "resnet18.onnx.data").stat().st_size > 10_000_000
    assert path.stat().st_size < 1_000_000
    reloaded = load_model(path)
    x = example_input(2, seed=5)
    expected = _torch(module, x)
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_run(reloaded, x), expected, rtol=1e-4, atol=1e-5)


def test_legacy_export_writes_the_path(tmp_path) -> None:
    module = build("inception_net")
    path = tmp_path / "inception.onnx"
    model = export_legacy(module, example_input(1), path)
    assert path.is_file()
    x = example_input(2, seed=7)
    np.testing.assert_allclose(_run(load_model(path), x), _run(model, x), rtol=0, atol=0)


def test_cached_export_returns_independent_copies() -> None:
    first = cached_export("vgg_net", "legacy")
    first.graph.ClearField("node")
    assert len(cached_export("vgg_net", "legacy").graph.node) > 0


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(BadSpecError, match="unknown exporter"):
        export(vgg_net(), example_input(1), "tflite")
    with pytest.raises(KeyError, match="unknown builder"):
        build("alexnet")
