"""Weights left in their files (core/weightfile.py): a lazily loaded model holds references, reads
the same values, writes the same bytes as the model loaded whole, and `apply` on a model stored
with external data writes external data and the same pruned model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxwootz.core import weightfile
from onnxwootz.core.errors import BadModelError
from onnxwootz.core.modelio import load_model, save_model
from onnxwootz.passes import mask
from onnxwootz.pruning import apply
from onnxwootz.runtime.sessions import cpu_session


def _model() -> onnx.ModelProto:
    """conv(16) -> relu -> conv(8), with a shape constant, a doc string and metadata, so every
    part of the file around the weights is written too."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 16, 3, 3)).astype(np.float32), "w2")
    w2.doc_string = "the second conv"
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv_1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["r"], name="relu"),
         helper.make_node("Conv", ["r", "w2"], ["y"], name="conv_2", pads=[1, 1, 1, 1])],
        "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w1, b1, w2], doc_string="graph doc")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8, producer_name="test")
    model.metadata_props.add(key="origin", value="test")
    return model


def _embedded(tmp_path: Path) -> Path:
    path = tmp_path / "embedded" / "m.onnx"
    path.parent.mkdir()
    onnx.save_model(_model(), str(path))
    return path


def _external(tmp_path: Path) -> Path:
    path = tmp_path / "external" / "m.onnx"
    path.parent.mkdir()
    onnx.save_model(_model(), str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    return path


@pytest.mark.parametrize("stored", [_embedded, _external])
def test_a_lazy_model_holds_references_and_reads_the_same_values(stored, tmp_path: Path) -> None:
    path = stored(tmp_path)
    lazy, eager = load_model(path, lazy=True), load_model(path)
    kinds = {init.name: weightfile.is_reference(init) for init in lazy.graph.initializer}
    assert kinds == {"w1": True, "b1": False, "w2": True}  # b1 (16 values) is no weight: read in
    assert lazy.ByteSize() < 1000
    for mine, theirs in zip(lazy.graph.initializer, eager.graph.initializer):
        assert np.array_equal(weightfile.read_array(mine), numpy_helper.to_array(theirs))
    assert weightfile.stored_apart(lazy, path) == (stored is _external)


@pytest.mark.parametrize("stored", [_embedded, _external])
def test_row_blocks_read_every_row_once_in_order(stored, tmp_path: Path) -> None:
    """Blocks of whole rows, at most `elements` values each, cover the tensor in order: read
    into a caller's array, or into one reused buffer, from a reference or from memory alike."""
    path = stored(tmp_path)
    for tensor in (*load_model(path, lazy=True).graph.initializer, *load_model(path).graph.initializer):
        values = numpy_helper.to_array(_model().graph.initializer[[i.name for i in _model().graph.initializer]
                                                                   .index(tensor.name)])
        row = values[0].size if values.ndim > 1 else 1
        out = np.empty_like(values)
        for target in (out, None):
            seen = []
            for rows, block in weightfile.row_blocks(tensor, 5 * row, out=target):
                assert block.shape == values[rows].shape and 1 <= len(block) <= 5
                assert np.array_equal(block, values[rows])
                seen += range(rows.start, rows.stop)
            assert seen == list(range(len(values)))
        assert np.array_equal(out, values)


@pytest.mark.parametrize("stored", [_embedded, _external])
def test_a_masked_copy_read_in_blocks_is_the_masked_array(stored, tmp_path: Path, monkeypatch) -> None:
    """The check's masked weights (read and masked a block of rows at a time) are bitwise what
    zero_removed makes of the whole array, with zeros or with ones (a divisor's fill)."""
    monkeypatch.setattr(mask, "BLOCK", 40)  # several blocks per weight
    entries = [{"axis": 0, "keep": [1, 2, 5, 6]}, {"axis": 1, "keep": [0, 2]}]
    for tensor in load_model(stored(tmp_path), lazy=True).graph.initializer:
        if tensor.name == "w1":
            values = weightfile.read_array(tensor)
            for fill in (0.0, 1.0):
                got, want = mask.masked_copy(tensor, entries, fill), mask.zero_removed(values, entries, fill)
                assert got.tobytes() == want.tobytes() and got.flags.writeable


@pytest.mark.parametrize("stored", [_embedded, _external])
def test_a_lazy_model_is_written_as_the_same_model(stored, tmp_path: Path) -> None:
    """The same bytes from an embedded model; from external data the same but for the explicit
    default data_location onnx's loader sets on what it reads in."""
    path = stored(tmp_path)
    save_model(load_model(path, lazy=True), tmp_path / "lazy.onnx")
    save_model(load_model(path), tmp_path / "eager.onnx")
    lazy, eager = ((tmp_path / name).read_bytes() for name in ("lazy.onnx", "eager.onnx"))
    assert eager == load_model(path).SerializeToString()  # streamed tensor by tensor, as protobuf writes it
    if stored is _embedded:
        assert lazy == eager
    models = [onnx.ModelProto.FromString(data) for data in (lazy, eager)]
    for model in models:
        for init in model.graph.initializer:
            init.ClearField("data_location")
    assert models[0].SerializeToString() == models[1].SerializeToString()


def test_external_data_is_written_beside_the_file_and_reads_back(tmp_path: Path) -> None:
    target = tmp_path / "out" / "m.onnx"
    save_model(load_model(_embedded(tmp_path), lazy=True), target, external=True)
    assert sorted(os.listdir(target.parent)) == ["m.onnx", "m.onnx.data"]
    raw = onnx.load(str(target), load_external_data=False)
    offsets = {init.name: {e.key: e.value for e in init.external_data}.get("offset") for init in raw.graph.initializer}
    assert offsets == {"w1": "0", "b1": None, "w2": "4096"}  # page-aligned; b1 under 1 KiB stays inside
    for mine, theirs in zip(load_model(target).graph.initializer, _model().graph.initializer):
        assert np.array_equal(numpy_helper.to_array(mine), numpy_helper.to_array(theirs))


def test_a_file_changed_under_a_reference_is_an_error(tmp_path: Path) -> None:
    path = _external(tmp_path)
    lazy = load_model(path, lazy=True)
    data = path.with_name("m.onnx.data")
    data.write_bytes(data.read_bytes()[::-1])
    with pytest.raises(BadModelError, match="changed after the model was loaded"):
        weightfile.read_array(lazy.graph.initializer[0])


def test_apply_on_external_data_writes_external_data_and_the_same_model(tmp_path: Path) -> None:
    outputs = {}
    for stored in (_embedded, _external):
        source = stored(tmp_path)
        target = tmp_path / f"{stored.__name__}-out" / "pruned.onnx"
        result = apply(source, rate=0.5, output=target)
        assert result.verified == "onnxruntime"
        assert target.with_name("pruned.onnx.data").exists() == (stored is _external)
        x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
        outputs[stored] = cpu_session(str(target)).run(None, {"x": x})[0]
    assert np.array_equal(outputs[_embedded], outputs[_external])


def test_a_file_that_carries_the_reference_key_is_refused(tmp_path: Path) -> None:
    """A reference skips the external-data location checks (this loader made it), so a file
    that brings its own, pointing outside its folder, must not load as one."""
    model = _model()
    forged = model.graph.initializer[0]
    weightfile._point(forged, "/etc/passwd", 0, 16 * 27 * 4, **{weightfile.STAMP: "1:1"})
    path = tmp_path / "forged.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(BadModelError, match="internal weight-reference key .* pointing at another file"):
        load_model(path, lazy=True)
    with pytest.raises(BadModelError):
        load_model(path)


def test_onnx_runtime_runs_a_model_whose_weights_are_left_in_their_file(tmp_path: Path) -> None:
    """Shape discovery runs ONNX Runtime on the lazily loaded model when inference leaves a
    shape unknown: its session reads the references in first."""
    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString())
    lazy = load_model(path, lazy=True)
    assert any(weightfile.is_reference(t) for t in lazy.graph.initializer)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = cpu_session(load_model(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(cpu_session(lazy).run(None, {"x": x})[0], expected)
