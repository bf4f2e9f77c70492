"""Model I/O: importing, canonicalizing and saving real graphs (the model zoo and both torch
exporters) changes nothing ONNX Runtime computes and keeps a dynamic batch dynamic; external
data is read only from inside the model's folder; broken files fail with one clear line; and
the counts of the full-size ResNet-50 match torchvision's."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from models import builders
from models.export import EXPORTERS, cached_export, export_legacy
from models.zoo import ZOO_NAMES, load_zoo
from onnxwootz.analysis import analyze
from onnxwootz.core.errors import BadModelError
from onnxwootz.core.modelio import load_model, save_model
from onnxwootz.core.onnx_helpers import dummy_feed, input_shapes
from onnxwootz.passes.canonicalize import canonicalize
from onnxwootz.runtime.sessions import cpu_session

TOLERANCE = 1e-5  # max |difference| relative to max |output|


@functools.lru_cache(maxsize=1)
def _zoo_bytes(name: str) -> bytes:
    """Each zoo graph once per process (VGG19 alone takes seconds to materialize)."""
    return load_zoo(name).SerializeToString()


def _source(kind: str) -> onnx.ModelProto:
    if kind.startswith("zoo:"):
        return onnx.load_from_string(_zoo_bytes(kind[4:]))
    _, name, exporter = kind.split(":")
    return cached_export(name, exporter)


def pre_softmax_names(model: onnx.ModelProto) -> list[str]:
    """Tensors feeding a Softmax that gives a graph output: a saturated Softmax (random-weight
    zoo ResNet-50, ShuffleNet) would hide any difference in front of it."""
    outputs = {value.name for value in model.graph.output}
    return [node.input[0] for node in model.graph.node
            if node.op_type == "Softmax" and node.output[0] in outputs and node.input[0] not in outputs]


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy that also outputs the named tensors."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in names:
        copy.graph.output.append(helper.make_empty_tensor_value_info(name))
    return copy


def run_named(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = cpu_session(model)
    names = [value.name for value in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-12))


def _batch_dim(value: onnx.ValueInfoProto) -> onnx.TensorShapeProto.Dimension:
    return value.type.tensor_type.shape.dim[0]


SOURCES = [f"zoo:{name}" for name in ZOO_NAMES] + [
    f"export:{name}:{exporter}" for name in ("resnet50", "mobilenet_v2") for exporter in EXPORTERS]


@pytest.mark.parametrize("kind", SOURCES)
def test_import_canonicalize_save_keeps_outputs(kind: str, tmp_path: Path) -> None:
    original = _source(kind)
    dynamic = kind.startswith("export:")
    if dynamic:
        assert _batch_dim(original.graph.input[0]).dim_param
    source = tmp_path / "original.onnx"
    onnx.save_model(original, str(source))
    canonical = canonicalize(load_model(source))
    written = save_model(canonical, tmp_path / "canonical.onnx")
    reloaded = load_model(written)

    shapes = input_shapes(original)
    if dynamic:  # batch 2 through a graph traced at batch 1
        shapes = {name: [2] + dims[1:] for name, dims in shapes.items()}
    feed = dummy_feed(original, shapes)
    extra = pre_softmax_names(original)
    expected = run_named(with_outputs(original, extra), feed)
    actual = run_named(with_outputs(reloaded, extra), feed)
    assert set(actual) == set(expected)
    logits_of = {node.output[0]: node.input[0] for node in original.graph.node if node.op_type == "Softmax"}
    for name, value in expected.items():
        assert actual[name].shape == value.shape, name
        logits = logits_of.get(name)
        if logits in expected:  # softmax is 1-Lipschitz (max norm): it moves at most as its logits do
            bound = max(TOLERANCE * float(np.max(np.abs(value))),
                        float(np.max(np.abs(actual[logits] - expected[logits]))))
            assert np.max(np.abs(actual[name] - value)) <= bound, name
        else:
            assert relative_error(actual[name], value) <= TOLERANCE, name

    assert [v.name for v in reloaded.graph.output] == [v.name for v in original.graph.output]
    if dynamic:
        for value in (reloaded.graph.input[0], reloaded.graph.output[0]):
            dim = _batch_dim(value)
            assert dim.dim_param and not dim.HasField("dim_value"), value.name


def _small_model() -> onnx.ModelProto:
    """A conv whose weight (4 KiB) is big enough to go to external data."""
    w = np.random.default_rng(0).standard_normal((16, 4, 4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 5, 5])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _save_external(folder: Path, location: str = "m.onnx.data") -> Path:
    path = folder / "m.onnx"
    onnx.save_model(_small_model(), str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def _relocate(path: Path, location: str) -> None:
    """Point every external tensor of the file at `location` (what a hostile file would do)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


def _assert_one_line(error: pytest.ExceptionInfo[BadModelError]) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    path = _save_external(tmp_path)
    assert (tmp_path / "m.onnx.data").is_file()
    raw = onnx.load(str(path), load_external_data=False)
    assert external_data_helper.uses_external_data(raw.graph.initializer[0])
    model = load_model(path)
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]),
                                  numpy_helper.to_array(_small_model().graph.initializer[0]))
    feed = dummy_feed(model, input_shapes(model))
    np.testing.assert_array_equal(run_named(model, feed)["y"], run_named(_small_model(), feed)["y"])


def test_external_data_in_a_subfolder_loads(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    path = _save_external(tmp_path, location="weights/m.data")
    assert load_model(path).graph.initializer[0].dims == [16, 4, 4, 4]


@pytest.mark.parametrize("escape", ["../x", "absolute", "weights/../../x"])
def test_external_data_outside_the_folder_is_refused(escape: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = _save_external(folder)
    outside = tmp_path / "x"
    outside.write_bytes((folder / "m.onnx.data").read_bytes())  # a readable file is there
    _relocate(path, str(outside) if escape == "absolute" else escape)
    with pytest.raises(BadModelError) as error:
        load_model(path)
    assert "outside the model's folder" in _assert_one_line(error)


def test_missing_external_data_file_is_refused(tmp_path: Path) -> None:
    path = _save_external(tmp_path)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(BadModelError) as error:
        load_model(path)
    assert "missing" in _assert_one_line(error)


def test_non_onnx_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n" * 20)
    with pytest.raises(BadModelError) as error:
        load_model(path)
    assert str(path) in _assert_one_line(error)


def test_truncated_model_is_refused(tmp_path: Path) -> None:
    data = cached_export("resnet18", "legacy").SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadModelError) as error:
        load_model(path)
    assert str(path) in _assert_one_line(error)


def test_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadModelError) as error:
        load_model(tmp_path / "nowhere.onnx")
    assert "not found" in _assert_one_line(error)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "out" / "m.onnx"
    save_model(_small_model(), target)
    save_model(_small_model(), target)  # overwrite in place
    assert sorted(os.listdir(target.parent)) == ["m.onnx"]
    assert load_model(target).graph.node[0].op_type == "Conv"


@pytest.fixture(scope="module")
def full_resnet50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torchvision-sized ResNet-50 exported once (legacy exporter, 1x3x224x224)."""
    path = tmp_path_factory.mktemp("resnet50") / "resnet50.onnx"
    export_legacy(builders.resnet50().eval(), torch.zeros(1, 3, 224, 224), path)
    return path


def test_counts_of_the_full_size_resnet50(full_resnet50: Path) -> None:
    result = analyze(full_resnet50, [1, 3, 224, 224])
    assert abs(result.params - 25_557_032) <= 0.01 * 25_557_032
    assert abs(result.macs - 4.09e9) <= 0.01 * 4.09e9
