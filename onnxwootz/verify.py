"""The check `apply` makes before it writes anything: the pruned model runs and computes what
the original computes with every removed slice zeroed (the mask oracle, passes/mask.py), on
one dummy input. ONNX Runtime runs both when it can; onnx's reference evaluator when ONNX
Runtime has no kernel for an op; when neither can run the original, the answer says so."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

from onnxwootz.errors import PruningError, first_line
from onnxwootz.modelio import dummy_feed, set_dims, without_weights
from onnxwootz.passes.mask import ZeroRemoved, plan_targets, zero_removed

TOLERANCE = 1e-3
"""max |pruned - masked| relative to max |masked|, per output: float noise is ~1e-5, a wrong
slice is of the order of the outputs."""


@dataclasses.dataclass
class Verification:
    by: str | None  # "onnxruntime", "reference", or None: not verified
    reason: str | None = None  # why not verified


def _weights_as_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model without its weights (typed inputs instead) and the weights as arrays: ONNX
    Runtime builds a session from the small graph in a fraction of the time the full model
    takes to serialize and load."""
    light = without_weights(model)
    kept = {init.name for init in light.graph.initializer}
    return light, {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.name not in kept}


def _run_onnxruntime(model: onnx.ModelProto, feed: dict[str, np.ndarray], slices: dict[str, list[dict]] | None) -> list:
    """Outputs of `model` (with the plan's removed slices zeroed when `slices` is given), its
    inputs declared with the feed's shapes (the check may run at a smaller size)."""
    from onnxwootz.runtime.sessions import cpu_session

    light, weights = _weights_as_inputs(model)
    if slices is not None:
        targets = plan_targets(model, slices)
        ZeroRemoved({name: entries for name, entries in targets.items() if name not in weights})(light)
        weights.update({name: zero_removed(weights[name], entries) for name, entries in targets.items()
                        if name in weights})
    for value in light.graph.input:
        if value.name in feed:
            set_dims(value, list(feed[value.name].shape))
    del light.graph.value_info[:]
    return cpu_session(light).run(None, {**feed, **weights})


def _run_reference(model: onnx.ModelProto, feed: dict[str, np.ndarray], slices: dict[str, list[dict]] | None) -> list:
    from onnx.reference import ReferenceEvaluator

    if slices is not None:
        masked = onnx.ModelProto()
        masked.CopyFrom(model)
        model = ZeroRemoved(slices)(masked).model
    return ReferenceEvaluator(model).run(None, feed)


MIN_HALVED = 64
"""Images smaller than this are checked at their own size only."""


def _check_sizes(feed_shapes: dict[str, list[int]]) -> list[dict[str, list[int]]]:
    """Input shapes to check at: first every image input at half its height and width (a
    quarter of the work; a mask error does not depend on the size), then the analysed shapes,
    which are used whenever the smaller ones do not run (fixed flatten sizes, height pooled to 1)."""
    images = all(len(shape) == 4 and min(shape[2:]) >= MIN_HALVED for shape in feed_shapes.values())
    if not feed_shapes or not images:
        return [feed_shapes]
    return [{name: [*shape[:2], shape[2] // 2, shape[3] // 2] for name, shape in feed_shapes.items()}, feed_shapes]


def verify_pruned(original: onnx.ModelProto, pruned: onnx.ModelProto, slices: dict[str, list[dict]],
                  feed_shapes: dict[str, list[int]]) -> Verification:
    """Raise PruningError when the pruned model does not load, run, or match the masked
    original; otherwise say which runtime showed it (or why none could)."""
    reasons = []
    for name, run in (("onnxruntime", _run_onnxruntime), ("reference", _run_reference)):
        sizes = _check_sizes(feed_shapes) if name == "onnxruntime" else [feed_shapes]
        for shapes in sizes:
            last = shapes is sizes[-1]
            feed = dummy_feed(original, shapes, seed=0)
            try:
                expected = run(original, feed, slices)
            except Exception as exc:  # the original does not run here: a larger size, or the next runtime
                if last:
                    reasons.append(f"{name}: {first_line(exc)}")
                continue
            try:
                actual = run(pruned, feed, None)
            except Exception as exc:
                if not last:
                    continue
                raise PruningError(f"the pruned model does not run in {name} ({first_line(exc)}); "
                                   "nothing written") from None
            _compare(pruned, actual, expected, name)
            return Verification(name)
    return Verification(None, "; ".join(reasons))


def _compare(pruned: onnx.ModelProto, actual: list, expected: list, runtime: str) -> None:
    for value, got, want in zip(pruned.graph.output, actual, expected):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            raise PruningError(f"output '{value.name}' of the pruned model has shape {list(got.shape)}, "
                               f"the original {list(want.shape)} ({runtime}); nothing written")
        if want.dtype.kind != "f":
            same = np.array_equal(got, want)
            error = 0.0 if same else np.inf
        else:
            scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-12)
            error = float(np.max(np.abs(got - want))) / scale if want.size else 0.0
        if not error <= TOLERANCE:
            raise PruningError(f"output '{value.name}' of the pruned model differs from the masked original by "
                               f"{error:.1e} of its range ({runtime}); nothing written")
