"""The check `apply` makes before it writes anything: the pruned model runs and computes what
the original computes with every removed slice zeroed (the mask oracle, passes/mask.py), on
one dummy input. ONNX Runtime runs both when it can; onnx's reference evaluator when ONNX
Runtime has no kernel for an op; when neither can run the original, the answer says so."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

from onnxwootz.errors import PruningError
from onnxwootz.modelio import dummy_feed, without_weights
from onnxwootz.passes.mask import ZeroRemoved, plan_targets, zero_removed

TOLERANCE = 1e-3
"""max |pruned - masked| relative to max |masked|, per output: float noise is ~1e-5, a wrong
slice is of the order of the outputs."""


@dataclasses.dataclass
class Verification:
    by: str | None  # "onnxruntime", "reference", or None: not verified
    reason: str | None = None  # why not verified


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _weights_as_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model without its weights (typed inputs instead) and the weights as arrays: ONNX
    Runtime builds a session from the small graph in a fraction of the time the full model
    takes to serialize and load."""
    light = without_weights(model)
    kept = {init.name for init in light.graph.initializer}
    return light, {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.name not in kept}


def _run_onnxruntime(model: onnx.ModelProto, feed: dict[str, np.ndarray], slices: dict[str, list[dict]] | None) -> list:
    """Outputs of `model` (with the plan's removed slices zeroed when `slices` is given)."""
    from onnxwootz.runtime.sessions import cpu_session

    light, weights = _weights_as_inputs(model)
    if slices is not None:
        targets = plan_targets(model, slices)
        ZeroRemoved({name: entries for name, entries in targets.items() if name not in weights})(light)
        weights.update({name: zero_removed(weights[name], entries) for name, entries in targets.items()
                        if name in weights})
    return cpu_session(light).run(None, {**feed, **weights})


def _run_reference(model: onnx.ModelProto, feed: dict[str, np.ndarray], slices: dict[str, list[dict]] | None) -> list:
    from onnx.reference import ReferenceEvaluator

    if slices is not None:
        masked = onnx.ModelProto()
        masked.CopyFrom(model)
        model = ZeroRemoved(slices)(masked).model
    return ReferenceEvaluator(model).run(None, feed)


def verify_pruned(original: onnx.ModelProto, pruned: onnx.ModelProto, slices: dict[str, list[dict]],
                  feed_shapes: dict[str, list[int]]) -> Verification:
    """Raise PruningError when the pruned model does not load, run, or match the masked
    original; otherwise say which runtime showed it (or why none could)."""
    feed = dummy_feed(original, feed_shapes, seed=0)
    reasons = []
    for name, run in (("onnxruntime", _run_onnxruntime), ("reference", _run_reference)):
        try:
            expected = run(original, feed, slices)
        except Exception as exc:  # this runtime cannot run the original: try the next one
            reasons.append(f"{name}: {_first_line(exc)}")
            continue
        try:
            actual = run(pruned, feed, None)
        except Exception as exc:
            raise PruningError(f"the pruned model does not run in {name} ({_first_line(exc)}); nothing written") from None
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
