"""The quality measures `prune` holds a candidate to, in one registry. Each is a function of the
student's outputs, the teacher's outputs (both lists of numpy arrays, one per graph output, for
the same images in the same order) and the labels (or None), giving a float in [0, 1] where
higher is better, so that one constraint form fits all: `METRIC >= teacher - d` or `METRIC >= v`.

- top1:     top-1 accuracy against class-index labels;
- agreement: top-1 agreement with the teacher (no labels);
- fidelity: clipped R^2 of every output against the teacher's (no labels, any output shape);
- map_iou[@thr]: IoU of the thresholded first output against the teacher's (probability maps);
- text:     exact-string accuracy of CTC-decoded first outputs against text labels.

Class scores (top1, agreement) are the first output flattened per image, so [N, C] and
[N, C, 1, 1] both work; a recognizer's [N, T, C] is for `text`."""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

import numpy as np
import onnx

from onnxwootz.core.errors import BadDataError, BadSpecError

MetricFunction = Callable[[Sequence[np.ndarray], Sequence[np.ndarray], "np.ndarray | None"], float]
DEFAULT_MAP_THRESHOLD = 0.3
"""DBNet's binarization threshold on its probability map (PaddleOCR's det_db_thresh)."""
LABELS_OF = {"top1": "class", "agreement": None, "fidelity": None, "map_iou": None, "text": "text"}
"""Each registry metric's labels: class indices, texts, or none."""
NAMES = tuple(LABELS_OF)
_NAME = re.compile(r"^(top1|agreement|fidelity|text|map_iou(?:@([0-9]*\.?[0-9]+))?)$")


@dataclasses.dataclass(frozen=True)
class Metric:
    """A named measure and the labels it needs: "class" (int indices), "text" (strings), None
    (no labels), or "any" for a caller's callable (custom_metric: whatever the data has)."""

    name: str
    labels: str | None
    function: MetricFunction

    def __call__(self, student: Sequence[np.ndarray], teacher: Sequence[np.ndarray],
                 labels: np.ndarray | None) -> float:
        return float(self.function(student, teacher, labels))


BOOTSTRAP_DRAWS = 200
"""Resamples of the validation images behind a noise margin: its standard error is then known
to about 5% (1 / sqrt(2 * draws))."""


class NoiseMargin:
    """`z` standard errors of a candidate's validation metric, by bootstrap over the validation
    images: each draw resamples the images with replacement and measures the metric on the
    resample, of the difference from the teacher on the same resample when the bound is relative
    to the teacher (`paired`: both see the same hard images, so only disagreements count), else
    of the metric alone. Any metric works as it is, pooled ones (map_iou) included. The draws
    are fixed by `seed`, so every candidate of a run is measured on the same resamples and a
    decision never changes on a re-run."""

    def __init__(self, metric: Metric, teacher: Sequence[np.ndarray], labels: np.ndarray | None, z: float,
                 paired: bool, seed: int, draws: int = BOOTSTRAP_DRAWS):
        self.metric, self.teacher, self.labels, self.z = metric, list(teacher), labels, z
        count = len(teacher[0]) if teacher else 0
        self.draws = np.random.default_rng(seed).integers(0, count, (draws, count)) if z > 0 and count else None
        self.teacher_values = (np.array([self._on(self.teacher, draw) for draw in self.draws])
                               if paired and self.draws is not None else None)

    def floor(self, student: Sequence[np.ndarray], value: float) -> float:
        """`value` (the student's metric on the whole split) less z standard errors."""
        if self.draws is None:
            return value
        values = np.array([self._on(student, draw) for draw in self.draws])
        if self.teacher_values is not None:
            values = values - self.teacher_values
        return value - self.z * float(values.std(ddof=1))

    def _on(self, student: Sequence[np.ndarray], draw: np.ndarray) -> float:
        labels = None if self.labels is None else np.asarray(self.labels)[draw]
        return self.metric([np.asarray(output)[draw] for output in student],
                           [np.asarray(output)[draw] for output in self.teacher], labels)


def class_scores(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The first output flattened per image: [N, C] and [N, C, 1, 1] both read as class scores."""
    first = np.asarray(outputs[0])
    return first.reshape(len(first), -1)


def top1(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray], labels: np.ndarray | None) -> float:
    """Fraction of images whose arg-max class is the label."""
    scores = class_scores(student)
    return float((scores.argmax(axis=1) == labels).mean()) if len(scores) else 0.0


def agreement(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray], labels: np.ndarray | None) -> float:
    """Fraction of images whose arg-max class is the teacher's: needs no labels, and a student
    that agrees with its teacher keeps whatever accuracy the teacher had."""
    scores = class_scores(student)
    return float((scores.argmax(axis=1) == class_scores(teacher).argmax(axis=1)).mean()) if len(scores) else 0.0


def fidelity(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray], labels: np.ndarray | None) -> float:
    """Mean over outputs of max(0, 1 - ||s - t||^2 / ||t - mean(t)||^2): the coefficient of
    determination of the student as a predictor of the teacher, clipped at 0. It needs no class
    axis (regression heads, YOLO boxes, feature maps), is scale-free (every output counts the
    same whatever its units), reads 1 for identical outputs and 0 for a student no better than
    predicting the teacher's mean everywhere. A constant teacher output scores 1 when matched
    exactly, else 0."""
    values = []
    for s, t in zip(student, teacher):
        s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
        error = float(np.square(s - t).sum())
        spread = float(np.square(t - t.mean()).sum()) if t.size else 0.0
        values.append((1.0 if error == 0.0 else 0.0) if spread == 0.0 else max(0.0, 1.0 - error / spread))
    return float(np.mean(values)) if values else 0.0


def map_iou(threshold: float = DEFAULT_MAP_THRESHOLD) -> MetricFunction:
    """IoU of {student > threshold} with {teacher > threshold} on the first output, pooled over
    the whole dataset (intersections summed, unions summed): pooling weighs every pixel the same,
    so images whose map is empty or tiny neither dominate nor become undefined as per-image IoU
    would. Both maps empty everywhere reads 1."""

    def iou(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray], labels: np.ndarray | None) -> float:
        s, t = np.asarray(student[0]) > threshold, np.asarray(teacher[0]) > threshold
        union = int(np.logical_or(s, t).sum())
        return 1.0 if union == 0 else int(np.logical_and(s, t).sum()) / union

    iou.__name__ = f"map_iou@{threshold:g}"
    return iou


def text(charset: Sequence[str]) -> MetricFunction:
    """Fraction of images whose greedy CTC decoding of the first output equals the label
    (surrounding spaces stripped on both sides)."""
    from onnxwootz.ctc import ctc_greedy_decode

    def exact(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray], labels: np.ndarray | None) -> float:
        decoded = ctc_greedy_decode(np.asarray(student[0]), charset)
        if not decoded:
            return 0.0
        return sum(d.strip() == str(label).strip() for d, label in zip(decoded, labels)) / len(decoded)

    return exact


def parse_metric_name(name: str) -> str:
    """The canonical spelling of a registry name (`map_iou` -> `map_iou@0.3`); BadSpecError for
    anything else."""
    match = _NAME.match(name.strip())
    if not match:
        raise BadSpecError(f"unknown metric '{name}'; known: {', '.join(NAMES)} (map_iou takes a threshold: "
                           "map_iou@0.5)")
    if match.group(1).startswith("map_iou"):
        return f"map_iou@{float(match.group(2) or DEFAULT_MAP_THRESHOLD):g}"
    return match.group(1)


def same_metric(a: str, b: str) -> bool:
    """Whether two spellings name the same registry metric (`map_iou` == `map_iou@0.3`)."""
    try:
        return parse_metric_name(a) == parse_metric_name(b)
    except BadSpecError:
        return a == b


def build_metric(name: str, model: onnx.ModelProto, output_shape: Sequence[int]) -> Metric:
    """The registry metric `name` for `model` (a `text` metric reads the model's character set;
    `output_shape` is the first output's shape, whose last dim is the class count)."""
    name = parse_metric_name(name)
    if name == "top1":
        return Metric(name, LABELS_OF[name], top1)
    if name == "agreement":
        return Metric(name, LABELS_OF[name], agreement)
    if name == "fidelity":
        return Metric(name, LABELS_OF[name], fidelity)
    if name.startswith("map_iou"):
        return Metric(name, LABELS_OF["map_iou"], map_iou(float(name.split("@")[1])))
    from onnxwootz.ctc import charset_of

    if len(output_shape) != 3:
        raise BadSpecError(f"metric 'text' needs a CTC output (batch, time, classes); the model's first output "
                           f"has shape {list(output_shape)}")
    charset = charset_of(model, int(output_shape[-1]))
    if charset is None:
        raise BadSpecError("metric 'text' needs the model's character set: its metadata has no 'character' entry "
                           "(PaddleOCR's dictionary, one character per line)")
    return Metric(name, LABELS_OF[name], text(charset))


def custom_metric(function: MetricFunction) -> Metric:
    """A caller's metric (pipelines): used with whatever labels the data has."""
    return Metric(getattr(function, "__name__", "custom"), "any", function)


def default_metric_name(labels: str | None, output_shape: Sequence[int]) -> str:
    """top1 for class labels on a classifier (one score vector per image), text for text labels,
    agreement for unlabeled data on a classifier; anything else must be chosen."""
    classifier = len(output_shape) >= 2 and int(np.prod(output_shape[2:], dtype=np.int64)) == 1
    if labels == "class" and classifier:
        return "top1"
    if labels == "text":
        return "text"
    if labels is None and classifier:
        return "agreement"
    shape = list(output_shape)
    raise BadSpecError(f"cannot choose a metric for output shape {shape} with {labels or 'no'} labels: pass --metric "
                       f"({', '.join(NAMES)})")


def check_labels(metric: Metric, labels: str | None) -> None:
    """One clear line when the data's labels do not suit the metric. Labels are allowed (and
    unused) with a label-free metric: a labelled set is still a set of images from the task."""
    if metric.labels in (None, "any") or metric.labels == labels:
        return
    if labels is None:
        raise BadDataError(f"metric '{metric.name}' needs {metric.labels} labels but the data has none "
                           "(use a label-free metric: --metric agreement, fidelity or map_iou)")
    raise BadDataError(f"metric '{metric.name}' needs {'class-index' if metric.labels == 'class' else 'text'} "
                       f"labels but the data has {labels} labels")
