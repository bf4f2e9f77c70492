"""Per-unit sensitivity of the bundled digits teacher: every entry is the metric of the model
with that unit alone L1-pruned at that rate, checked against an independent ONNX Runtime
evaluation; label-free data measures agreement with the teacher; bad inputs are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.data import load_dataset
from onnxwootz.prepared import PreparedModel, prepare
from onnxwootz.preprocess import Preprocess
from onnxwootz.pruning import prune_prepared
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.sensitivity import measure_sensitivity, profile

TEACHER = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"
IMAGES = 96


@pytest.fixture(scope="module")
def digits() -> tuple[PreparedModel, np.ndarray, np.ndarray]:
    prepared = prepare(TEACHER)
    dataset = load_dataset("digits", Preprocess.from_model(prepared.model), 10, 0)
    return prepared, dataset.x_val[:IMAGES], dataset.y_val[:IMAGES]


def _predictions(model, x: np.ndarray) -> np.ndarray:
    session = cpu_session(model, 1)
    return session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)


def test_drops_are_the_accuracy_lost_with_one_unit_pruned(digits) -> None:
    prepared, x, y = digits
    result = measure_sensitivity(prepared, x, y, rates=(0.7, 0.3, 0.0, 0.5), threads=1)
    assert result.metric == "accuracy" and result.images == IMAGES
    assert result.rates == [0.3, 0.5, 0.7], "sorted, rate 0 (the teacher itself) left out"
    names = [unit.name for unit in prepared.units("module").units]
    assert [unit.name for unit in result.units] == names
    assert result.teacher == pytest.approx(float(np.mean(_predictions(prepared.model, x) == y)))
    for unit in result.units:
        assert len(unit.metric) == len(unit.drop) == 3
        assert unit.drop == pytest.approx([result.teacher - m for m in unit.metric])
    # one entry recomputed from scratch: the last unit alone at the largest rate
    pruned = prune_prepared(prepared, {**{n: 0.0 for n in names}, names[-1]: 0.7}, "module", 1)
    assert result.units[-1].metric[-1] == pytest.approx(float(np.mean(_predictions(pruned.model, x) == y)))
    assert result.drops()[-1][0.7] == result.units[-1].drop[-1]
    # the teacher is trained: pruning its first unit hard costs accuracy
    assert result.units[0].drop[-1] > 0.1


def test_without_labels_the_metric_is_agreement_with_the_teacher(digits) -> None:
    prepared, x, _ = digits
    free = measure_sensitivity(prepared, x, None, rates=[0.7], threads=1)
    assert free.metric == "agreement" and free.teacher == 1.0
    teacher = _predictions(prepared.model, x)
    names = [unit.name for unit in free.units]
    pruned = prune_prepared(prepared, {**{n: 0.0 for n in names}, names[0]: 0.7}, "module", 1)
    assert free.units[0].metric == [pytest.approx(float(np.mean(_predictions(pruned.model, x) == teacher)))]
    assert all(0.0 <= unit.drop[0] <= 1.0 for unit in free.units)
    assert free.to_dict()["units"][0]["name"] == names[0]


def test_profile_loads_the_validation_split_the_model_names(digits) -> None:
    prepared, _, _ = digits
    result = profile(prepared, "digits", rates=[0.5], threads=1)
    assert result.metric == "accuracy" and result.images > IMAGES
    assert result.floor == pytest.approx(0.1) and result.headroom == pytest.approx(result.teacher - 0.1)  # 10 digits
    assert result.model == prepared.label


@pytest.mark.parametrize(("labels", "rates", "error", "message"), [
    (np.zeros(3, dtype=np.int64), [0.5], BadDataError, "must be 96 class indices"),
    (np.array(["a"] * IMAGES), [0.5], BadDataError, "class indices"),
    (None, [0.0], BadSpecError, "at least one pruning rate above 0"),
    (None, [1.0], BadSpecError, "outside"),
])
def test_bad_inputs_are_clear_errors(digits, labels, rates, error, message) -> None:
    prepared, x, _ = digits
    with pytest.raises(error, match=message):
        measure_sensitivity(prepared, x, labels, rates, threads=1)


def test_no_images_is_a_data_error(digits) -> None:
    prepared, x, _ = digits
    with pytest.raises(BadDataError, match="at least one validation image"):
        measure_sensitivity(prepared, x[:0], None, [0.5])


def test_a_map_model_is_profiled_by_the_runs_metric(tmp_path: Path) -> None:
    """A probability-map model has no class axis: its profile is the map IoU it will be held
    to, recomputed here for one entry from ONNX Runtime outputs."""
    from onnxwootz.metrics import Metric, map_iou
    from test_prune_users_models import prob_map

    prepared = prepare(prob_map(tmp_path / "map.onnx"), [1, 3, 16, 16])
    x = np.random.default_rng(0).random((24, 3, 16, 16)).astype(np.float32)
    metric = Metric("map_iou@0.5", None, map_iou(0.5))
    result = measure_sensitivity(prepared, x, rates=[0.5], metric=metric)
    assert result.metric == "map_iou@0.5" and result.teacher == 1.0 and result.floor == 0.0
    pruned = prune_prepared(prepared, {u.name: (0.5 if u.name == result.units[0].name else 0.0)
                                       for u in result.units}, "module", 1)
    teacher, student = (cpu_session(m).run(None, {"x": x}) for m in (prepared.model, pruned.model))
    assert result.units[0].metric == [pytest.approx(map_iou(0.5)(student, teacher, None))]


def test_with_refit_images_each_entry_is_measured_from_the_blocks_least_squares_start() -> None:
    """What `prune` profiles when blocks start from least squares: the pruned unit's block span
    refitted on training images before the evaluation, so a unit whose pruned channels a refit
    recovers is not reported as lost."""
    prepared = prepare(TEACHER)
    dataset = load_dataset("digits", Preprocess.from_model(prepared.model), 10, 0)
    x, y = dataset.x_val[:IMAGES], dataset.y_val[:IMAGES]
    plain = measure_sensitivity(prepared, x, y, rates=[0.7], threads=1)
    refit = measure_sensitivity(prepared, x, y, rates=[0.7], threads=1, refit_images=dataset.x_train[:256])
    assert refit.teacher == plain.teacher
    lost = [(a.drop[0], b.drop[0]) for a, b in zip(plain.units, refit.units)]
    assert sum(after for _, after in lost) < 0.5 * sum(before for before, _ in lost), lost
