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


class Pooled:
    """A metric that is a function of per-image sums: `parts` gives one row of k numbers per
    image ([n, k]), the value is `combine` of their column sums. Every registry metric is one,
    so a resample of the images (the bound's noise margin) is a weighted sum of rows, as cheap
    for a detector's probability maps as for class scores."""

    def __init__(self, parts: Callable[[Sequence[np.ndarray], Sequence[np.ndarray], "np.ndarray | None"], np.ndarray],
                 combine: Callable[[np.ndarray], float], name: str, doc: str):
        self.parts, self.combine, self.__name__, self.__doc__ = parts, combine, name, doc

    def __call__(self, student: Sequence[np.ndarray], teacher: Sequence[np.ndarray],
                 labels: np.ndarray | None) -> float:
        return self.combine(self.parts(student, teacher, labels).sum(axis=0))


def class_scores(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The first output flattened per image: [N, C] and [N, C, 1, 1] both read as class scores."""
    first = np.asarray(outputs[0])
    return first.reshape(len(first), -1)


def _ratio(sums: np.ndarray) -> float:
    """Hits over count (0 for no images)."""
    return float(sums[0] / sums[1]) if sums[1] else 0.0


def _hits(hits: np.ndarray) -> np.ndarray:
    return np.stack([hits.astype(np.float64), np.ones(len(hits))], axis=1)


top1 = Pooled(lambda student, teacher, labels: _hits(class_scores(student).argmax(axis=1) == labels), _ratio, "top1",
              "Fraction of images whose arg-max class is the label.")

agreement = Pooled(
    lambda student, teacher, labels: _hits(class_scores(student).argmax(axis=1) == class_scores(teacher).argmax(axis=1)),
    _ratio, "agreement",
    "Fraction of images whose arg-max class is the teacher's: needs no labels, and a student that agrees with its "
    "teacher keeps whatever accuracy the teacher had.")


def _fidelity_parts(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray],
                    labels: np.ndarray | None) -> np.ndarray:
    """Per image and output: the squared error, the teacher's sum, sum of squares and size."""
    columns = []
    for s, t in zip(student, teacher):
        s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
        s, t = s.reshape(len(s), -1), t.reshape(len(t), -1)
        columns += [np.square(s - t).sum(axis=1), t.sum(axis=1), np.square(t).sum(axis=1),
                    np.full(len(t), t.shape[1], np.float64)]
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0))


def _fidelity_combine(sums: np.ndarray) -> float:
    values = []
    for error, total, squares, size in sums.reshape(-1, 4):
        spread = squares - total * total / size if size else 0.0
        if spread <= 1e-12 * squares:  # a constant teacher output (up to rounding)
            values.append(1.0 if error == 0.0 else 0.0)
        else:
            values.append(max(0.0, 1.0 - error / spread))
    return float(np.mean(values)) if values else 0.0


fidelity = Pooled(
    _fidelity_parts, _fidelity_combine, "fidelity",
    "Mean over outputs of max(0, 1 - ||s - t||^2 / ||t - mean(t)||^2): the coefficient of determination of the "
    "student as a predictor of the teacher, clipped at 0. It needs no class axis (regression heads, YOLO boxes, "
    "feature maps), is scale-free (every output counts the same whatever its units), reads 1 for identical outputs "
    "and 0 for a student no better than predicting the teacher's mean everywhere. A constant teacher output scores "
    "1 when matched exactly, else 0.")


def map_iou(threshold: float = DEFAULT_MAP_THRESHOLD) -> Pooled:
    """IoU of {student > threshold} with {teacher > threshold} on the first output, pooled over
    the whole dataset (intersections summed, unions summed): pooling weighs every pixel the same,
    so images whose map is empty or tiny neither dominate nor become undefined as per-image IoU
    would. Both maps empty everywhere reads 1."""

    def parts(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray], labels: np.ndarray | None) -> np.ndarray:
        s, t = np.asarray(student[0]) > threshold, np.asarray(teacher[0]) > threshold
        s, t = s.reshape(len(s), -1), t.reshape(len(t), -1)
        return np.stack([np.logical_and(s, t).sum(axis=1), np.logical_or(s, t).sum(axis=1)], axis=1).astype(np.float64)

    return Pooled(parts, lambda sums: 1.0 if sums[1] == 0 else float(sums[0] / sums[1]), f"map_iou@{threshold:g}",
                  map_iou.__doc__)


def text(charset: Sequence[str]) -> Pooled:
    """Fraction of images whose greedy CTC decoding of the first output equals the label
    (surrounding spaces stripped on both sides)."""
    from onnxwootz.ctc import ctc_greedy_decode

    def parts(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray], labels: np.ndarray | None) -> np.ndarray:
        decoded = ctc_greedy_decode(np.asarray(student[0]), charset)
        return _hits(np.array([d.strip() == str(label).strip() for d, label in zip(decoded, labels)], bool))

    return Pooled(parts, _ratio, "text", text.__doc__)


BOOTSTRAP_DRAWS = 200
"""Resamples of the validation images behind a noise margin: its standard error is then known
to about 5% (1 / sqrt(2 * draws))."""


class NoiseMargin:
    """`z` standard errors of a candidate's validation metric, by bootstrap over the validation
    images: each draw resamples the images with replacement and measures the metric on the
    resample, of the difference from the teacher on the same resample when the bound is relative
    to the teacher (`paired`: both see the same hard images, so only disagreements count), else
    of the metric alone. A registry metric (Pooled) is resampled as weighted sums of its
    per-image rows; a caller's callable is run on each resample. The draws are fixed by `seed`,
    so every candidate of a run is measured on the same resamples and a decision never changes
    on a re-run."""

    def __init__(self, metric: Metric, teacher: Sequence[np.ndarray], labels: np.ndarray | None, z: float,
                 paired: bool, seed: int, draws: int = BOOTSTRAP_DRAWS):
        self.metric, self.teacher, self.labels, self.z = metric, list(teacher), labels, z
        count = len(teacher[0]) if teacher else 0
        self.draws = np.random.default_rng(seed).integers(0, count, (draws, count)) if z > 0 and count else None
        self.pooled = metric.function if isinstance(metric.function, Pooled) else None
        # how often each image appears in each draw: a Pooled metric's resample is weights @ rows
        self.weights = (np.stack([np.bincount(draw, minlength=count) for draw in self.draws]).astype(np.float64)
                        if self.draws is not None and self.pooled is not None else None)
        self.teacher_values = (self._resampled(self.teacher) if paired and self.draws is not None else None)

    def floor(self, student: Sequence[np.ndarray], value: float) -> float:
        """`value` (the student's metric on the whole split) less z standard errors."""
        if self.draws is None:
            return value
        values = self._resampled(student)
        if self.teacher_values is not None:
            values = values - self.teacher_values
        return value - self.z * float(values.std(ddof=1))

    def _resampled(self, student: Sequence[np.ndarray]) -> np.ndarray:
        """The metric of `student` on every draw."""
        if self.pooled is not None:
            sums = self.weights @ self.pooled.parts(student, self.teacher, self.labels)
            return np.array([self.pooled.combine(row) for row in sums])
        labels = None if self.labels is None else np.asarray(self.labels)
        return np.array([self.metric([np.asarray(output)[draw] for output in student],
                                     [np.asarray(output)[draw] for output in self.teacher],
                                     None if labels is None else labels[draw]) for draw in self.draws])


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
