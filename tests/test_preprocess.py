"""Preprocessing from the user: presets, JSON, channel order, aspect-preserving padding, the
passthrough contract, and sizes resolved from the model or --input-shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.preprocess import PREPROCESS_KEY, Preprocess, get_metadata, resolve_preprocess


def _model(dims: list[int | str]) -> onnx.ModelProto:
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [value("x", onnx.TensorProto.FLOAT, dims)], [value("y", onnx.TensorProto.FLOAT, dims)])
    return onnx.helper.make_model(graph)


def test_imagenet_preset_takes_the_size_from_a_static_model() -> None:
    pre = resolve_preprocess("imagenet", _model(["N", 3, 224, 224]))
    assert pre.size == (224, 224) and pre.channels == 3 and pre.mean == (0.485, 0.456, 0.406)
    assert pre.scale == pytest.approx(1 / 255) and pre.order == "RGB" and pre.resize == "stretch"


def test_dynamic_model_needs_a_size_from_the_flag_or_the_input_shape() -> None:
    dynamic = _model(["N", 3, "H", "W"])
    with pytest.raises(BadSpecError, match="give \"size\": \\[H, W\\] in --preprocess or pass --input-shape"):
        resolve_preprocess("unit", dynamic)
    assert resolve_preprocess("unit", dynamic, [1, 3, 32, 64]).size == (32, 64)
    given = resolve_preprocess('{"size": [48, 192], "scale": 0.00392156862745098, "mean": [0.5], "std": [0.5], '
                               '"order": "BGR", "resize": "pad"}', dynamic)
    assert given.size == (48, 192) and given.channels == 3 and given.order == "BGR" and given.resize == "pad"


def test_json_file_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "pre.json"
    path.write_text(json.dumps({"size": [8, 8], "channels": 1}))
    assert resolve_preprocess(str(path), _model([1, 1, 8, 8])) == Preprocess(size=(8, 8), channels=1)
    for value, fragment in (("resnet", "must be a preset \\(imagenet, unit, none\\)"),
                            (str(tmp_path / "nowhere.json"), "file not found"),
                            ('{"size": [8, 8], "order": "GBR"}', "'order' must be 'RGB' or 'BGR'"),
                            ('{"size": [8, 8], "crop": 1}', "unknown keys crop"),
                            ("{nope", "--preprocess is not valid JSON")):
        with pytest.raises(BadSpecError, match=fragment):
            resolve_preprocess(value, _model([1, 1, 8, 8]))


def test_no_flag_reads_the_models_metadata() -> None:
    model = _model([1, 1, 8, 8])
    assert resolve_preprocess(None, model) is None
    Preprocess(size=(8, 8), channels=1, order="BGR").write_to(model)
    assert resolve_preprocess(None, model).order == "BGR"


def test_bgr_reverses_the_channels_before_normalizing() -> None:
    rgb = np.zeros((1, 4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    out = Preprocess(size=(4, 4), channels=3, scale=1 / 255, mean=(0.1, 0.2, 0.3), order="BGR").apply(rgb)
    np.testing.assert_allclose(out[0, :, 0, 0], [0 - 0.1, 0 - 0.2, 1 - 0.3], atol=1e-6)


def test_pad_keeps_the_aspect_ratio_and_pads_with_zero_after_normalizing() -> None:
    pre = Preprocess(size=(8, 32), channels=3, scale=1 / 255, mean=(0.5,), std=(0.5,), resize="pad")
    wide, narrow = np.full((16, 128, 3), 255, np.uint8), np.full((4, 8, 3), 255, np.uint8)
    out = pre.apply([wide, narrow])
    assert out.shape == (2, 3, 8, 32)
    np.testing.assert_allclose(out[0], 1.0)  # wider than 4:1 fills the width
    np.testing.assert_allclose(out[1, :, :, :16], 1.0)  # 4x8 -> 8x16, then 16 columns of padding
    np.testing.assert_array_equal(out[1, :, :, 16:], 0.0)


def test_passthrough_feeds_arrays_unchanged_and_records_nothing() -> None:
    pre = resolve_preprocess("none", _model(["N", 3, "H", "W"]))
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7))
    np.testing.assert_array_equal(pre.apply(x), x.astype(np.float32))
    model = _model([1, 3, 5, 7])
    pre.write_to(model)
    assert get_metadata(model, PREPROCESS_KEY) is None
    with pytest.raises(BadDataError, match="batch of model inputs"):
        pre.apply(np.zeros((0, 3)))
