"""The metric registry: each metric's value on outputs whose answer is known by construction,
the default choice from labels and output shape, and every misuse as one clear error line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.metrics import (NoiseMargin, agreement, build_metric, check_labels, custom_metric, default_metric_name,
                               fidelity, map_iou, parse_metric_name, top1)
from onnxwootz.spec import load_spec

EMPTY = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))


def test_top1_counts_argmax_hits_on_flattened_scores() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])[:, :, None, None]  # [N, C, 1, 1]
    labels = np.array([1, 0, 0, 0])
    assert top1([scores], [scores], labels) == pytest.approx(3 / 4)


def test_agreement_compares_with_the_teachers_argmax_not_labels() -> None:
    teacher = np.eye(4)[[0, 1, 2, 3, 0]]
    student = np.eye(4)[[0, 1, 3, 3, 1]]
    assert agreement([student], [teacher], None) == pytest.approx(3 / 5)
    assert agreement([teacher], [teacher], None) == 1.0


def test_fidelity_is_clipped_r2_averaged_over_outputs() -> None:
    rng = np.random.default_rng(0)
    boxes, scores = rng.normal(size=(8, 4, 5)), rng.normal(size=(8, 3))
    assert fidelity([boxes, scores], [boxes, scores], None) == 1.0
    mean_only = np.full_like(boxes, boxes.mean())
    assert fidelity([mean_only, scores], [boxes, scores], None) == pytest.approx(0.5)  # (0 + 1) / 2
    assert fidelity([-boxes, scores], [boxes, scores], None) == pytest.approx(0.5)  # R^2 < 0 clipped to 0
    noisy = boxes + 0.1 * rng.normal(size=boxes.shape)
    expected = 1 - np.square(noisy - boxes).sum() / np.square(boxes - boxes.mean()).sum()
    assert fidelity([noisy], [boxes], None) == pytest.approx(expected)
    constant = np.ones((4, 2))
    assert fidelity([constant], [constant], None) == 1.0 and fidelity([constant * 2], [constant], None) == 0.0


def test_map_iou_pools_thresholded_maps_over_the_dataset() -> None:
    teacher = np.zeros((2, 1, 4, 4))
    teacher[0, 0, :2, :2] = 0.9  # 4 pixels on
    teacher[1, 0, 0, :] = 0.9  # 4 pixels on
    student = np.zeros_like(teacher)
    student[0, 0, :2, :2] = 0.5  # the same 4 above 0.3
    student[1, 0, 0, :2] = 0.5  # 2 of the 4, plus 2 extra
    student[1, 0, 3, :2] = 0.5
    # intersections 4 + 2, unions 4 + 6
    assert map_iou(0.3)([student], [teacher], None) == pytest.approx(6 / 10)
    assert map_iou(0.6)([student], [teacher], None) == 0.0  # the student is never above 0.6
    assert map_iou(0.95)([student], [teacher], None) == 1.0  # both empty: identical


def test_text_decodes_ctc_and_compares_stripped_strings() -> None:
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    model.metadata_props.add(key="character", value="a\nb")
    metric = build_metric("text", model, [2, 4, 4])  # blank, a, b, space
    def scores(*paths):  # noqa: E306
        return np.stack([np.eye(4)[list(path)] for path in paths])
    student = scores([1, 1, 0, 2], [3, 1, 2, 0])  # "ab", " ab"
    assert metric([student], [student], np.array(["ab", "ab "])) == 1.0
    assert metric([student], [student], np.array(["ab", "ba"])) == 0.5


@pytest.mark.parametrize("name, canonical", [("top1", "top1"), ("map_iou", "map_iou@0.3"),
                                             ("map_iou@0.5", "map_iou@0.5"), (" fidelity ", "fidelity")])
def test_metric_names_parse(name: str, canonical: str) -> None:
    assert parse_metric_name(name) == canonical


def test_unknown_metric_is_one_line() -> None:
    with pytest.raises(BadSpecError, match="unknown metric 'mAP'; known: top1") as caught:
        load_spec(metric="mAP")
    assert "\n" not in str(caught.value)


def test_constraint_naming_another_metric_is_refused() -> None:
    assert load_spec(constraint="map_iou >= 0.9").metric_name() == "map_iou@0.3"
    assert load_spec(metric="map_iou", constraint="map_iou@0.3 >= teacher - 0.1").metric_name() == "map_iou@0.3"
    with pytest.raises(BadSpecError, match="the constraint names metric 'fidelity' but the metric is 'agreement'"):
        load_spec(metric="agreement", constraint="fidelity >= 0.9")
    with pytest.raises(BadSpecError, match="unknown metric 'recall'"):
        load_spec(constraint="recall >= 0.9")


def test_defaults_follow_labels_and_output_shape() -> None:
    assert default_metric_name("class", [1, 10]) == "top1"
    assert default_metric_name("class", [1, 10, 1, 1]) == "top1"
    assert default_metric_name(None, [1, 10]) == "agreement"
    assert default_metric_name("text", [1, 40, 97]) == "text"
    with pytest.raises(BadSpecError, match=r"output shape \[1, 1, 32, 32\] with no labels: pass --metric"):
        default_metric_name(None, [1, 1, 32, 32])


def test_labels_that_do_not_suit_the_metric_are_one_line() -> None:
    top = build_metric("top1", EMPTY, [1, 10])
    with pytest.raises(BadDataError, match="metric 'top1' needs class labels but the data has none"):
        check_labels(top, None)
    with pytest.raises(BadDataError, match="metric 'top1' needs class-index labels but the data has text labels"):
        check_labels(top, "text")
    check_labels(build_metric("agreement", EMPTY, [1, 10]), "class")  # allowed, and unused
    check_labels(custom_metric(lambda s, t, y: 1.0), None)


def test_text_needs_a_ctc_output_and_a_character_set() -> None:
    with pytest.raises(BadSpecError, match="needs a CTC output"):
        build_metric("text", EMPTY, [1, 10])
    with pytest.raises(BadSpecError, match="no 'character' entry"):
        build_metric("text", EMPTY, [1, 40, 97])
    with pytest.raises(BadDataError, match="metric 'text' needs text labels but the data has none"):
        model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
        model.metadata_props.add(key="character", value="a")
        check_labels(build_metric("text", model, [1, 4, 3]), None)


def _one_hot_classifier(labels: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Class scores that pick the label, except on `wrong` images (the next class)."""
    picked = np.where(wrong, (labels + 1) % 10, labels)
    return np.eye(10)[picked]


def test_noise_margin_is_the_bootstrap_standard_error_of_the_difference_from_the_teacher() -> None:
    """Paired (a bound relative to the teacher): only the images where the two disagree count,
    so the margin is the textbook standard error of a paired difference, sd(d) / sqrt(n), and a
    student that copies the teacher has none. Unpaired (an absolute bound): the binomial error
    of the student's accuracy. z scales it; the same seed gives the same floor."""
    rng = np.random.default_rng(0)
    n = 900
    labels = rng.integers(0, 10, n)
    teacher_wrong, student_wrong = rng.random(n) < 0.05, rng.random(n) < 0.08
    teacher, student = [_one_hot_classifier(labels, teacher_wrong)], [_one_hot_classifier(labels, student_wrong)]
    metric = build_metric("top1", EMPTY, [1, 10])
    value = metric(student, teacher, labels)
    paired = NoiseMargin(metric, teacher, labels, z=2.0, paired=True, seed=0)
    difference = teacher_wrong.astype(float) - student_wrong.astype(float)
    textbook = difference.std(ddof=1) / np.sqrt(n)
    assert (value - paired.floor(student, value)) / 2.0 == pytest.approx(textbook, rel=0.15)
    assert paired.floor(teacher, metric(teacher, teacher, labels)) == pytest.approx(metric(teacher, teacher, labels))
    alone = NoiseMargin(metric, teacher, labels, z=1.0, paired=False, seed=0)
    assert value - alone.floor(student, value) == pytest.approx(np.sqrt(value * (1 - value) / n), rel=0.15)
    assert NoiseMargin(metric, teacher, labels, z=2.0, paired=True, seed=0).floor(student, value) == \
        paired.floor(student, value)
    assert NoiseMargin(metric, teacher, labels, z=0.0, paired=True, seed=0).floor(student, value) == value


def test_noise_margin_works_for_pooled_and_label_free_metrics() -> None:
    """map_iou pools over images: resampling images still measures its spread."""
    rng = np.random.default_rng(1)
    teacher = [rng.random((40, 1, 8, 8))]
    student = [teacher[0] + rng.normal(0, 0.1, teacher[0].shape)]
    metric = build_metric("map_iou", EMPTY, [1, 1, 8, 8])
    value = metric(student, teacher, None)
    floor = NoiseMargin(metric, teacher, None, z=1.0, paired=True, seed=0).floor(student, value)
    assert 0 < value - floor < 0.1


@pytest.mark.parametrize("name", ["top1", "agreement", "fidelity", "map_iou"])
def test_pooled_resampling_is_the_metric_run_on_each_resample(name: str) -> None:
    """A registry metric's margin comes from weighted sums of per-image rows; it equals the
    margin of the same function run on every resampled set of images."""
    rng = np.random.default_rng(2)
    shape = [1, 10] if name in ("top1", "agreement") else [1, 2, 6, 6]
    teacher = [rng.random((60, *shape[1:])), rng.normal(size=(60, 3))]
    student = [output + rng.normal(0, 0.2, output.shape) for output in teacher]
    labels = rng.integers(0, 10, 60)
    metric = build_metric(name, EMPTY, shape)
    plain = custom_metric(lambda s, t, y: metric(s, t, y))
    value = metric(student, teacher, labels)
    for paired in (True, False):
        fast = NoiseMargin(metric, teacher, labels, z=1.0, paired=paired, seed=3).floor(student, value)
        slow = NoiseMargin(plain, teacher, labels, z=1.0, paired=paired, seed=3).floor(student, value)
        assert fast == pytest.approx(slow, abs=1e-9) and fast < value
