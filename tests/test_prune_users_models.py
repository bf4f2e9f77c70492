"""`prune` on the models users bring: a torchvision-style export with only --data DIR --preprocess
imagenet, no labels (agreement with the teacher), several outputs
(fidelity), a probability map (map IoU) with dynamic spatial dims resolved from the data, a
Python callable as the metric; the held-out test split reported beside validation; and every
misuse as one clear line with its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxwootz
from onnxwootz.context import CONFIRM_SEED_OFFSET
from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.data import Dataset, load_dataset
from onnxwootz.metrics import agreement, fidelity, map_iou
from onnxwootz.preprocess import Preprocess, get_metadata
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.spec import Spec

from cli_helpers import one_clean_line, run_cli

TEACHER = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"
TINY = {"candidates": 4, "pretrain_steps": 5, "finetune_steps": 5, "eval_every": 5, "batch": 16}
TINY_FLAGS = ["--candidates", "4", "--pretrain-steps", "5", "--finetune-steps", "5"]
UNIT_RGB = json.dumps({"size": [16, 16], "channels": 3, "scale": 1 / 255, "mean": [0.5], "std": [0.25]})


def _conv(rng, name: str, cin: int, cout: int, k: int, x: str, out: str, nodes: list, inits: list) -> None:
    weight = (rng.normal(size=(cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(np.float32)
    bias = (0.1 * rng.normal(size=cout)).astype(np.float32)
    inits += [numpy_helper.from_array(weight, f"{name}.w"), numpy_helper.from_array(bias, f"{name}.b")]
    nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], pads=[k // 2] * 4, kernel_shape=[k, k]))


def _trunk(rng, nodes: list, inits: list) -> str:
    """Three 3x3 convs with ReLU (16 channels each: three prunable units)."""
    source = "x"
    for i in range(3):
        _conv(rng, f"c{i}", 3 if i == 0 else 16, 16, 3, source, f"c{i}", nodes, inits)
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        source = f"r{i}"
    return source


def _model(nodes: list, inits: list, inputs: list, outputs: list, name: str) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def two_heads(path: Path) -> Path:
    """A detector-like net: a dense box map [N, 4, 16, 16] and class scores [N, 3]."""
    rng, nodes, inits = np.random.default_rng(0), [], []
    trunk = _trunk(rng, nodes, inits)
    _conv(rng, "box", 16, 4, 1, trunk, "boxes", nodes, inits)
    nodes += [helper.make_node("GlobalAveragePool", [trunk], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"])]
    inits.append(numpy_helper.from_array(rng.normal(size=(3, 16)).astype(np.float32), "fc.w"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w"], ["scores"], transB=1))
    model = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                   [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4, 16, 16]),
                    helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])], "two_heads")
    onnx.save(model, str(path))
    return path


def prob_map(path: Path) -> Path:
    """A segmenter ending in Sigmoid: [N, 3, H, W] -> [N, 1, H, W], H and W dynamic."""
    rng, nodes, inits = np.random.default_rng(1), [], []
    trunk = _trunk(rng, nodes, inits)
    _conv(rng, "head", 16, 1, 1, trunk, "logit", nodes, inits)
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["prob"]))
    model = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                   [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, "H", "W"])], "prob_map")
    onnx.save(model, str(path))
    return path


def ctc_recognizer(path: Path) -> Path:
    """A CTC recognizer in PaddleOCR's form: [N, 3, 8, 32] -> softmax scores [N, 32, 4] over
    (blank, 'a', 'b', space), its dictionary in the metadata."""
    rng, nodes, inits = np.random.default_rng(3), [], []
    trunk = _trunk(rng, nodes, inits)
    _conv(rng, "cls", 16, 4, 1, trunk, "per_pixel", nodes, inits)
    inits[-2] = numpy_helper.from_array(4 * numpy_helper.to_array(inits[-2]), "cls.w")  # confident, varied readings
    inits[-1] = numpy_helper.from_array(np.zeros(4, np.float32), "cls.b")
    nodes += [helper.make_node("ReduceMean", ["per_pixel"], ["columns"], axes=[2], keepdims=0),
              helper.make_node("Transpose", ["columns"], ["steps"], perm=[0, 2, 1]),
              helper.make_node("Softmax", ["steps"], ["scores"], axis=2)]
    model = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 32])],
                   [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 32, 4])], "ctc")
    model.metadata_props.add(key="character", value="a\nb")
    onnx.save(model, str(path))
    return path


def images(path: Path, count: int = 160, size: int = 16) -> Path:
    """Unlabeled RGB images (smooth random fields, so maps have structure), train and val."""
    rng = np.random.default_rng(2)
    coarse = rng.integers(0, 256, size=(count, size // 4, size // 4, 3)).astype(np.float32)
    x = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.uint8)
    np.savez(path, x_train=x[: count // 2], x_val=x[count // 2:])
    return path


def digits_unlabeled(path: Path) -> Path:
    from sklearn.datasets import load_digits

    x = load_digits().images.astype(np.float32)
    np.savez(path, x_train=x[:1200], x_val=x[1200:])
    return path


def _outputs(model_path: str | Path, x: np.ndarray) -> list[np.ndarray]:
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    return cpu_session(model).run(None, {model.graph.input[0].name: x})


def as_split_by_prune(dataset: Dataset) -> Dataset:
    """The dataset with the validation images divided as `prune` divides them at seed 0 (the
    rest, and the confirmation split)."""
    return dataset.with_confirmation(Spec().confirm_fraction, CONFIRM_SEED_OFFSET)


def _check_result(result, splits_of) -> None:
    """The test-split fields: present, consistent with the data, and recomputable."""
    assert result.splits == splits_of and result.splits["test"] > 0
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    for key in ("metric", "teacher_test_metric", "test_metric", "splits", "preprocess", "input_shape"):
        assert summary[key] == getattr(result, key)
    assert 0.0 <= result.teacher_test_metric <= 1.0


def test_label_free_digits_prune_against_teacher_agreement(tmp_path: Path) -> None:
    data = digits_unlabeled(tmp_path / "digits.npz")
    result = onnxwootz.prune(TEACHER, data=str(data), run_dir=tmp_path / "run", metric="agreement",
                             constraint="accuracy >= teacher - 0.1", **TINY)
    preprocess = Preprocess.from_model(onnx.load(str(TEACHER)))
    dataset = as_split_by_prune(load_dataset(str(data), preprocess))
    assert dataset.labels is None
    _check_result(result, {"train": len(dataset.x_train), "val": len(dataset.x_val), "test": len(dataset.x_test),
                           "unlabeled": 0, "confirm": len(dataset.x_confirm)})
    assert result.metric == "agreement" and result.teacher_accuracy == 1.0 and result.teacher_test_metric == 1.0
    assert result.model is not None and result.params < result.teacher_params
    teacher_test = _outputs(TEACHER, dataset.x_test)
    assert result.test_metric == pytest.approx(agreement(_outputs(result.model, dataset.x_test), teacher_test, None))
    assert result.accuracy == pytest.approx(
        agreement(_outputs(result.model, dataset.x_val), _outputs(TEACHER, dataset.x_val), None), abs=1e-6)
    answer = onnx.load(result.model)
    assert get_metadata(answer, "onnxwootz.metric") == "agreement"
    assert float(get_metadata(answer, "onnxwootz.metric_value")) == pytest.approx(result.accuracy, abs=1e-6)
    assert Preprocess.from_model(answer) == preprocess
    assert all(t.blocks or result.mode == "baseline" for t in result.trials[:1])


def test_two_output_model_is_held_to_fidelity_on_every_output(tmp_path: Path) -> None:
    model, data = two_heads(tmp_path / "two.onnx"), images(tmp_path / "x.npz")
    result = onnxwootz.prune(model, data=str(data), run_dir=tmp_path / "run", metric="fidelity", preprocess=UNIT_RGB,
                             constraint="fidelity >= teacher - 0.3", **TINY)
    assert result.metric == "fidelity" and result.teacher_accuracy == 1.0 and result.input_shape == [1, 3, 16, 16]
    assert result.model is not None and result.params < result.teacher_params
    dataset = as_split_by_prune(load_dataset(str(data), Preprocess.from_model(onnx.load(result.model))))
    _check_result(result, {"train": 80, "val": len(dataset.x_val), "test": len(dataset.x_test), "unlabeled": 0,
                           "confirm": len(dataset.x_confirm)})
    student = _outputs(result.model, dataset.x_test)
    assert [o.shape[1:] for o in student] == [(4, 16, 16), (3,)]
    assert result.test_metric == pytest.approx(fidelity(student, _outputs(model, dataset.x_test), None), abs=1e-4)
    assert result.accuracy >= result.bound


def test_yolo_heads_as_model_inputs_are_held_to_fidelity(tmp_path: Path) -> None:
    """A YOLOv8-style detector's three raw head outputs, fed arrays that already are model inputs
    (--preprocess none): every output keeps its shape in the answer, and the test figure is the
    fidelity recomputed with ONNX Runtime."""
    from models.builders import TEST_INPUT_SHAPE
    from models.export import cached_export

    model = tmp_path / "yolo.onnx"
    onnx.save(cached_export("yolo_v8_heads", "legacy"), str(model))
    x = np.random.default_rng(5).standard_normal((96, *TEST_INPUT_SHAPE[1:])).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    result = onnxwootz.prune(model, data=str(tmp_path / "x.npz"), run_dir=tmp_path / "run", metric="fidelity",
                             preprocess="none", constraint="accuracy >= teacher - 0.5", **TINY)
    assert result.preprocess == {"preset": "none", "channels": TEST_INPUT_SHAPE[1]}
    assert result.model is not None and result.params < result.teacher_params
    dataset = load_dataset(str(tmp_path / "x.npz"), Preprocess(size=None, channels=3, passthrough=True))
    teacher, student = _outputs(model, dataset.x_test), _outputs(result.model, dataset.x_test)
    assert len(student) == 3 and [s.shape for s in student] == [t.shape for t in teacher]
    assert result.test_metric == pytest.approx(fidelity(student, teacher, None), abs=1e-4)


def test_probability_map_with_dynamic_dims_through_the_cli(tmp_path: Path) -> None:
    model, data = prob_map(tmp_path / "map.onnx"), images(tmp_path / "x.npz")
    run = tmp_path / "run"
    completed = run_cli("prune", str(model), "--data", str(data), "--run-dir", str(run), "--preprocess", "unit",
                         "--input-shape", "1,3,16,16", "--metric", "map_iou@0.5", "--constraint",
                         "map_iou@0.5 >= teacher - 0.4", "--json", *TINY_FLAGS)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["metric"] == "map_iou@0.5" and result["input_shape"] == [1, 3, 16, 16]
    assert result["model"] is not None and result["params"] < result["teacher_params"]
    dataset = load_dataset(str(data), Preprocess.from_model(onnx.load(result["model"])))
    assert result["splits"]["test"] == len(dataset.x_test) > 0
    iou = map_iou(0.5)(_outputs(result["model"], dataset.x_test), _outputs(model, dataset.x_test), None)
    assert result["test_metric"] == pytest.approx(iou, abs=1e-4)
    assert result["wall_seconds"] > 0
    trials = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    assert next(e for e in trials if e["event"] == "teacher")["model"] == str(model.resolve())
    again = onnxwootz.prune(result["model"], data=str(data), run_dir=tmp_path / "again",
                            constraint="accuracy >= teacher - 0.4", **TINY)  # no flags: its metadata says
    assert again.metric == "map_iou@0.5" and again.preprocess == result["preprocess"]


def test_ctc_recognizer_is_held_to_text_accuracy_on_string_labels(tmp_path: Path) -> None:
    """Labels are the teacher's own readings of random images, so the teacher reads 1.0; the
    answer's test figure is its exact-match rate, recomputed here with ONNX Runtime."""
    from onnxwootz.ctc import charset_of, ctc_greedy_decode

    model = ctc_recognizer(tmp_path / "rec.onnx")
    columns = np.random.default_rng(4).integers(0, 256, size=(120, 1, 8, 3))
    x = np.repeat(np.repeat(columns, 8, axis=1), 4, axis=2).astype(np.uint8)  # 8 glyph-like columns
    preprocess = json.dumps({"size": [8, 32], "channels": 3, "scale": 1 / 255, "mean": [0.5], "std": [0.25]})
    inputs = Preprocess.from_dict(json.loads(preprocess)).apply(x)
    charset = charset_of(onnx.load(str(model)), 4)
    texts = np.array(ctc_greedy_decode(_outputs(model, inputs)[0], charset))
    assert len(set(texts)) > 5  # the readings differ: a real task
    data = tmp_path / "texts.npz"
    np.savez(data, x_train=x[:60], y_train=texts[:60], x_val=x[60:], y_val=texts[60:])
    result = onnxwootz.prune(model, data=str(data), run_dir=tmp_path / "run", preprocess=preprocess,
                             constraint="accuracy >= teacher - 0.9", **TINY)
    assert result.metric == "text" and result.teacher_accuracy == 1.0 and result.teacher_test_metric == 1.0
    assert result.model is not None
    dataset = load_dataset(str(data), Preprocess.from_dict(json.loads(preprocess)))
    read = ctc_greedy_decode(_outputs(result.model, dataset.x_test)[0], charset)
    assert result.test_metric == pytest.approx(np.mean([r.strip() == t.strip() for r, t in zip(read, dataset.y_test)]))


def test_a_callable_metric_from_the_python_api(tmp_path: Path) -> None:
    model, data = two_heads(tmp_path / "two.onnx"), images(tmp_path / "x.npz")
    seen = []

    def scores_close(student: list[np.ndarray], teacher: list[np.ndarray], labels) -> float:
        seen.append((len(student), labels))
        return float(np.mean(np.abs(student[1] - teacher[1]) < 0.5))

    result = onnxwootz.prune(model, data=str(data), run_dir=tmp_path / "run", metric=scores_close,
                             preprocess=UNIT_RGB, constraint="accuracy >= 0.5", **TINY)
    assert result.metric == "scores_close" and result.teacher_accuracy == 1.0
    assert seen and all(n == 2 and labels is None for n, labels in seen)
    assert result.test_metric is None or 0.0 <= result.test_metric <= 1.0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("misuse")
    rgb = images(root / "x.npz")
    x = np.load(rgb)["x_train"]
    texts = np.array(["a", "b"] * (len(x) // 2))
    np.savez(root / "texts.npz", x_train=x, y_train=texts, x_val=x, y_val=texts)
    np.savez(root / "raw9.npz", x=np.zeros((40, 1, 9, 9), np.float32))
    return {"digits": digits_unlabeled(root / "digits.npz"), "rgb": rgb, "texts": root / "texts.npz",
            "map": prob_map(root / "map.onnx"), "two": two_heads(root / "two.onnx"),
            "raw9": root / "raw9.npz"}


GRAY = json.dumps({"size": [16, 16], "channels": 1, "scale": 1 / 16, "mean": [0.5], "std": [0.5]})
SMALL_RGB = json.dumps({"size": [8, 8], "channels": 3, "scale": 1.0, "mean": [0.0], "std": [1.0]})


@pytest.mark.parametrize("model, data, options, error, fragment", [
    ("teacher", "digits", {"metric": "top1"}, BadDataError, "needs class labels but the data has none"),
    ("teacher", "texts", {"metric": "top1", "preprocess": GRAY}, BadDataError,
     "needs class-index labels but the data has text labels"),
    ("teacher", None, {"metric": "mAP"}, BadSpecError, "unknown metric 'mAP'"),
    ("teacher", None, {"metric": "agreement", "constraint": "top1 >= 0.9"}, BadSpecError,
     "the constraint names metric 'top1' but the metric is 'agreement'"),
    ("teacher", "digits", {"finetune_loss": "ce"}, BadSpecError, "finetune_loss 'ce' needs class-index labels"),
    ("map", "rgb", {}, BadSpecError, "--preprocess"),
    ("map", "rgb", {"preprocess": UNIT_RGB}, BadSpecError, "pass --metric"),
    ("two", "digits", {"preprocess": SMALL_RGB, "metric": "fidelity"}, BadDataError, "the model's input 'x' is"),
    ("teacher", "raw9", {"preprocess": "none"}, BadDataError,
     r"images become \[1, 9, 9\] after preprocessing but the model.s input"),
])
def test_misuses_are_one_clear_error(files, tmp_path: Path, model, data, options, error, fragment) -> None:
    path = TEACHER if model == "teacher" else files[model]
    with pytest.raises(error, match=fragment) as caught:
        onnxwootz.prune(path, data=str(files[data]) if data else None, run_dir=tmp_path / "r", **TINY, **options)
    assert "\n" not in str(caught.value)


def test_misuses_exit_with_one_line_from_the_cli(files, tmp_path: Path) -> None:
    run = str(tmp_path / "r")
    one_clean_line(run_cli("prune", str(TEACHER), "--data", str(files["digits"]), "--run-dir", run, "--metric",
                             "top1"), 3, "needs class labels but the data has none")
    one_clean_line(run_cli("prune", str(TEACHER), "--run-dir", run, "--input-shape", "1,x"), 4, "--input-shape")


@pytest.mark.parametrize("architecture", ["resnet18", "convnext"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_torchvision_style_export_prunes_with_only_data_and_a_preset(architecture: str, exporter: str,
                                                                     tmp_path: Path) -> None:
    """A classifier as users export it (torchvision's ResNet-18 and ConvNeXt layouts from
    models.builders, no onnxwootz metadata) and a folder of class subfolders: `--data DIR
    --preprocess imagenet` is all `prune` needs; the answer carries the preprocessing and
    metric it was found with. ConvNeXt's blocks train and assemble through its pruned
    LayerNorms (padded back to the full width)."""
    from PIL import Image

    from models.builders import TEST_INPUT_SHAPE
    from models.export import cached_export

    model = tmp_path / f"{architecture}.onnx"
    onnx.save(cached_export(architecture, exporter), str(model))
    rng = np.random.default_rng(8)
    for label in range(3):
        folder = tmp_path / "photos" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            pixels[..., label] = 255  # one bright channel per class
            Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
    completed = run_cli("prune", str(model), "--data", str(tmp_path / "photos"), "--preprocess", "imagenet",
                        "--run-dir", str(tmp_path / "run"), "--constraint", "accuracy >= 0", "--json", *TINY_FLAGS)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["metric"] == "top1" and result["input_shape"] == list(TEST_INPUT_SHAPE)
    # 70/15/15 per class, the 15% val halved into val and confirmation
    assert result["splits"] == {"train": 24, "val": 3, "test": 6, "unlabeled": 0, "confirm": 3}
    assert result["model"] is not None and result["test_metric"] is not None
    assert result["params"] < result["teacher_params"]  # any candidate meets "accuracy >= 0": the smallest
    answer = onnx.load(result["model"])
    assert Preprocess.from_model(answer) == Preprocess(size=(32, 32), channels=3, scale=1 / 255,
                                                       mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert get_metadata(answer, "onnxwootz.metric") == "top1"
    outputs = cpu_session(answer).run(None, {answer.graph.input[0].name: np.zeros((2, 3, 32, 32), np.float32)})
    assert outputs[0].shape == (2, 10)
