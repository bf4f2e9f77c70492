"""The check `apply` makes before it writes anything: the pruned model runs and computes what
the original computes with every removed slice zeroed (the mask oracle, passes/mask.py), on
one dummy input. ONNX Runtime runs both when it can; onnx's reference evaluator when ONNX
Runtime has no kernel for an op; when neither can run the original, the answer says so."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from onnxwootz.core.errors import PruningError, first_line
from onnxwootz.core.onnx_helpers import dummy_feed, set_dims, without_weights
from onnxwootz.core.weightfile import materialized, read_array
from onnxwootz.passes.mask import ZeroRemoved, divisors, masked_copy, plan_targets

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
    return light, {init.name: read_array(init) for init in model.graph.initializer if init.name not in kept}


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """`model` (changed in place) also giving the tensors `names`."""
    have = {value.name for value in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names if name not in have)
    return model


def _onnxruntime_model(model: onnx.ModelProto, slices: dict[str, list[dict]] | None
                       ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """What ONNX Runtime runs: the weight-free graph and the weights to feed it (as read: mapped
    from their files when they are references), with the plan's removed slices zeroed when
    `slices` is given (a masked weight is the one copy made of it)."""
    light, weights = _weights_as_inputs(model)
    if slices is not None:
        targets = plan_targets(model, slices)
        ZeroRemoved({name: entries for name, entries in targets.items() if name not in weights})(light)
        ones = divisors(model)
        tensors = {init.name: init for init in model.graph.initializer}
        for name, entries in targets.items():
            if name in weights:
                weights[name] = masked_copy(tensors[name], entries, float(name in ones))
    return light, weights


def _run_onnxruntime(runnable: tuple[onnx.ModelProto, dict[str, np.ndarray]], feed: dict[str, np.ndarray],
                     extra: list[str]) -> dict[str, np.ndarray]:
    """Outputs by name, and the tensors `extra`, the inputs declared with the feed's shapes (the
    check may run at a smaller size)."""
    from onnxwootz.runtime.sessions import cpu_session

    light, weights = runnable
    for value in light.graph.input:
        if value.name in feed:
            set_dims(value, list(feed[value.name].shape))
    del light.graph.value_info[:]
    session = cpu_session(_with_outputs(light, extra))
    names = [value.name for value in session.get_outputs()]
    return dict(zip(names, session.run(names, {**feed, **weights})))


def _reference_model(model: onnx.ModelProto, slices: dict[str, list[dict]] | None) -> onnx.ModelProto:
    """The model with its weights read in (and the removed slices zeroed when `slices` is given)."""
    copy = materialized(model)
    if slices is not None:
        ZeroRemoved(slices)(copy)
    return copy


def _run_reference(model: onnx.ModelProto, feed: dict[str, np.ndarray], extra: list[str]) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(_with_outputs(model, extra))
    return dict(zip(evaluator.output_names, evaluator.run(None, feed)))


RUNTIMES = (("onnxruntime", _onnxruntime_model, _run_onnxruntime), ("reference", _reference_model, _run_reference))
"""Name, what a model becomes to run there, and how it runs at one input."""


MIN_SIDE = 32
"""The smallest height/width a reduced-size check runs at (one pixel after stride 32)."""


def _check_sizes(feed_shapes: dict[str, list[int]]) -> list[dict[str, list[int]]]:
    """Input shapes to check at: first every image input at a quarter (or half) its height and
    width, no side under MIN_SIDE (a sixteenth or a quarter of the work; a mask error does not
    depend on the size), then the analysed shapes, which are used whenever the smaller ones do
    not run (fixed flatten sizes, height pooled to 1)."""
    if not feed_shapes or any(len(shape) != 4 for shape in feed_shapes.values()):
        return [feed_shapes]
    side = min(min(shape[2:]) for shape in feed_shapes.values())
    factor = next((f for f in (4, 2) if side // f >= MIN_SIDE), 1)
    if factor == 1:
        return [feed_shapes]
    return [{name: [*shape[:2], shape[2] // factor, shape[3] // factor] for name, shape in feed_shapes.items()},
            feed_shapes]


SQUASHES = {"Softmax": 1.0, "Sigmoid": 0.25}
"""Final ops whose outputs saturate, with their Lipschitz constants in the max norm."""


def squashed_outputs(model: onnx.ModelProto) -> dict[str, tuple[str, float]]:
    """Graph output -> (its logits, Lipschitz constant) for outputs made by a final Softmax or
    Sigmoid, seen through value-preserving Reshape/Flatten (the opset-13 Softmax wrapper). On a
    random input a saturated output can be all but 0 everywhere, so its error relative to its
    own range says nothing; the logits' does."""
    producer = {name: node for node in model.graph.node for name in node.output}
    found = {}
    for value in model.graph.output:
        node = producer.get(value.name)
        while node is not None and node.op_type in ("Reshape", "Flatten"):
            node = producer.get(node.input[0])
        if node is not None and node.op_type in SQUASHES:
            found[value.name] = (node.input[0], SQUASHES[node.op_type])
    return found


def verify_pruned(original: onnx.ModelProto, pruned: onnx.ModelProto, slices: dict[str, list[dict]],
                  feed_shapes: dict[str, list[int]]) -> Verification:
    """Raise PruningError when the pruned model does not load, run, or match the masked
    original; otherwise say which runtime showed it (or why none could). The masked original
    is released before the pruned model is built, so the two are never held at once."""
    tensors = {name for node in pruned.graph.node for name in node.output}
    squashed = {out: entry for out, entry in squashed_outputs(original).items() if entry[0] in tensors}
    extra = [logits for logits, _ in squashed.values()]
    reasons = []
    for name, build, run in RUNTIMES:
        sizes = _check_sizes(feed_shapes) if name == "onnxruntime" else [feed_shapes]
        feeds = [dummy_feed(original, shapes, seed=0) for shapes in sizes]
        first = 0
        while True:
            found = _expected(build, run, original, slices, feeds[first:], extra)
            if isinstance(found, str):
                reasons.append(f"{name}: {found}")
                break
            at, expected = found[0] + first, found[1]
            try:
                actual = run(build(pruned, None), feeds[at], extra)
            except Exception as exc:
                if at < len(sizes) - 1:  # perhaps a larger size runs
                    first = at + 1
                    continue
                raise PruningError(f"the pruned model does not run in {name} ({first_line(exc)}); "
                                   "nothing written") from None
            for value in pruned.graph.output:
                _compare(value.name, actual, expected, squashed.get(value.name), name)
            return Verification(name)
    return Verification(None, "; ".join(reasons))


def _expected(build, run, original: onnx.ModelProto, slices: dict[str, list[dict]],
              feeds: list[dict[str, np.ndarray]], extra: list[str]) -> tuple[int, dict[str, np.ndarray]] | str:
    """The masked original's outputs at the first of `feeds` it runs at, with that feed's
    position; or why it runs at none (the error at the last)."""
    try:
        runnable = build(original, slices)
    except Exception as exc:
        return first_line(exc)
    for at, feed in enumerate(feeds):
        try:
            return at, run(runnable, feed, extra)
        except Exception as exc:  # the original does not run here: a larger size, or the next runtime
            error = exc
    return first_line(error)


def _error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| relative to max |want| (exactness for non-float tensors)."""
    if want.dtype.kind != "f":
        return 0.0 if np.array_equal(got, want) else np.inf
    if not want.size:
        return 0.0
    return float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-12)


def _compare(name: str, actual: dict[str, np.ndarray], expected: dict[str, np.ndarray],
             squash: tuple[str, float] | None, runtime: str) -> None:
    got, want = np.asarray(actual[name]), np.asarray(expected[name])
    if got.shape != want.shape:
        raise PruningError(f"output '{name}' of the pruned model has shape {list(got.shape)}, "
                           f"the original {list(want.shape)} ({runtime}); nothing written")
    error = _error(got, want)
    if error <= TOLERANCE:
        return
    if squash is not None:  # a saturated Softmax/Sigmoid: its logits must match, it moves no more than they do
        logits, lipschitz = squash
        moved = float(np.max(np.abs(actual[logits] - expected[logits])))
        bounded = np.max(np.abs(got - want)) <= lipschitz * moved * (1 + 1e-3)
        if _error(actual[logits], expected[logits]) <= TOLERANCE and bounded:
            return
    raise PruningError(f"output '{name}' of the pruned model differs from the masked original by "
                       f"{error:.1e} of its range ({runtime}); nothing written")
