"""Candidate evaluation: assemble a candidate network (L1-pruned teacher, with the pre-trained
blocks it is composed of put in, in method mode), score it with the run's metric on the
validation split, fine-tune it only if that misses the bound, and, when it meets the bound
there and on the confirmation split, finish and check the answer (export options, metadata,
onnx.checker, ONNX Runtime == torch). The result is a TrialEvent for the driver to journal;
nothing here writes the run directory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxwootz.blocks_training import block_file
from onnxwootz.context import METRIC_KEY, METRIC_VALUE_KEY, RunContext
from onnxwootz.events import TrialEvent
from onnxwootz.tuning_blocks import BlockSet

if TYPE_CHECKING:
    from onnxwootz.runtime.training import Scored


class CandidateEvaluator:
    """Runs one candidate's trial; `blockset` is None in baseline mode (no blocks are used)."""

    def __init__(self, context: RunContext, configs: list[list[float]], blockset: BlockSet | None):
        self.context, self.configs, self.blockset = context, configs, blockset
        self._confirmations: list[list[float]] = []  # the running trial's looks at the confirmation split

    def assemble(self, candidate: int):
        """The pruned candidate (a PrunedModel) and the blocks whose trained weights it holds."""
        from onnxwootz.passes.graph_index import replace_initializer
        from onnxwootz.pruning import prune_prepared

        context = self.context
        rates = self.configs[candidate]
        pruned = prune_prepared(context.prepared, dict(zip(context.unit_names, rates)), context.spec.granularity,
                                context.spec.round_to)
        used = list(self.blockset.composites[candidate].blocks) if self.blockset is not None else []
        blocks = [self.blockset.blocks[b] for b in used]
        arrays = block_weights([(range(block.start, block.stop), context.rundir.load_arrays(block_file(block)))
                                for block in blocks], context.prepared.units(context.spec.granularity).reads)
        for name, full in arrays.items():
            replace_initializer(pruned.model, name, _take(full, pruned.canonical_slices.get(name, [])))
        if self.blockset is None and context.spec.start() == "lsq":
            self._refit(pruned)
        return pruned, used

    def _refit(self, pruned) -> None:
        """The fair baseline's start: every conv of the candidate that lost input channels refitted
        by least squares to the teacher's output of the same conv, in graph order (the method's
        block start, over the whole network, with no block training)."""
        import torch

        from onnxwootz.blocks_training import RECONSTRUCTION_IMAGES
        from onnxwootz.runtime.reconstruction import TeacherTargets, reconstruct_span

        teacher = self.context.prepared.model
        targets = TeacherTargets(teacher, self.context.dataset.x_inputs[:RECONSTRUCTION_IMAGES],
                                 threads=torch.get_num_threads())
        reconstruct_span(targets, pruned.model, [teacher.graph.input[0].name], pruned.canonical_slices)

    def trial(self, candidate: int) -> tuple[TrialEvent, onnx.ModelProto | None]:
        """Assemble, evaluate, fine-tune if needed. Returns the trial (not journaled: the driver
        keeps the journal) and, when the candidate meets the bound, the checked answer."""
        from onnxwootz.runtime.devices import prepare_module
        from onnxwootz.runtime.torch_graph import TorchGraph
        from onnxwootz.runtime.training import finetune_with

        context = self.context
        started = time.perf_counter()
        self._confirmations = []
        pruned, used = self.assemble(candidate)
        view = prepare_module(TorchGraph(pruned.model, context.prepared.feed_shapes), context.device)
        outcome = finetune_with(view, context.x_pool, context.loss, self.score, context.bound,
                                context.spec.finetune_config(candidate), context.progress,
                                f"candidate {candidate} ({context.mode})")
        answer = None
        if outcome.met:
            answer = self._finish_answer(view, pruned.model if outcome.steps == 0 else view.to_onnx(), outcome.accuracy)
        latency = context.rundir.find("latency", candidate=candidate)
        trial = TrialEvent(mode=context.mode, candidate=candidate, rates=self.configs[candidate], params=pruned.params,
                           macs=pruned.macs, latency_ms=latency["p50_ms"] if latency else None,
                           accuracy_at_assembly=outcome.curve[0][1], accuracy=outcome.accuracy,
                           accuracy_floor=outcome.floor if outcome.accuracy >= context.bound else None,
                           confirmations=self._confirmations, met=outcome.met,
                           steps=outcome.steps, seconds=time.perf_counter() - started, blocks=used,
                           curve=[list(point) for point in outcome.curve])
        return trial, answer

    def score(self, view) -> Scored:
        """The run's metric of a view on the validation split, and its floor: the value less the
        run's noise margin, measured only where the value reaches the bound (below it the floor,
        which is never above the value, cannot). Where the floor reaches the bound, the view is
        scored on the confirmation split too, and the floor is capped at the bound plus the
        slack there (its floor less its bound): it meets the bound only if it meets both."""
        from onnxwootz.runtime.training import Scored, predict_outputs

        context = self.context
        outputs = predict_outputs(view, context.x_val)
        value = context.metric(outputs, context.teacher_val, context.dataset.y_val)
        if value < context.bound:
            return Scored(value, value)
        floor = context.noise.floor(outputs, value)
        confirmation = context.confirmation
        if floor >= context.bound and confirmation is not None:
            outputs = predict_outputs(view, confirmation.x)
            confirmed = context.metric(outputs, confirmation.teacher, confirmation.labels)
            confirmed_floor = confirmation.noise.floor(outputs, confirmed)
            self._confirmations.append([confirmed, confirmed_floor])
            floor = min(floor, context.bound + confirmed_floor - confirmation.bound)
        return Scored(value, floor)

    def test_metric(self) -> float:
        """The written answer's metric on the held-out test split (after every decision is made)."""
        from onnxwootz.core.modelio import load_model
        from onnxwootz.runtime.devices import prepare_module
        from onnxwootz.runtime.torch_graph import TorchGraph
        from onnxwootz.runtime.training import predict_outputs

        context = self.context
        view = prepare_module(TorchGraph(load_model(context.answer_path), context.prepared.feed_shapes),
                              context.device)
        return context.metric(predict_outputs(view, context.x_test), context.teacher_test, context.dataset.y_test)

    def _finish_answer(self, view, model: onnx.ModelProto, value: float) -> onnx.ModelProto:
        """Export options, metadata (preprocessing, dataset, metric), the full checker, and ONNX
        Runtime == torch on real images for the model as written: a failed check raises, so
        nothing is written."""
        from onnxwootz.passes.base import check_model
        from onnxwootz.passes.export import export_options
        from onnxwootz.preprocess import ACCURACY_KEY, DATASET_KEY, set_metadata
        from onnxwootz.runtime.sessions import cpu_session
        from onnxwootz.runtime.training import predict_outputs

        context, spec = self.context, self.context.spec
        if spec.fold_bn or spec.opset:
            model = export_options(model, spec.fold_bn, spec.opset)
        context.preprocess.write_to(model)
        set_metadata(model, DATASET_KEY, context.data_name)
        set_metadata(model, METRIC_KEY, context.metric.name)
        set_metadata(model, METRIC_VALUE_KEY, f"{value:.6f}")
        if context.metric.name == "top1":
            set_metadata(model, ACCURACY_KEY, f"{value:.6f}")
        check_model(model)
        sample = context.dataset.x_val[:16]
        ort_outputs = cpu_session(model).run(None, {model.graph.input[0].name: sample})
        torch_outputs = predict_outputs(view.eval(), context.x_val[:16])
        for name, ort, reference in zip(context.output_names, ort_outputs, torch_outputs):
            if ort.shape != reference.shape or not np.allclose(ort, reference, rtol=1e-3, atol=1e-4):
                raise RuntimeError(f"the answer disagrees with its torch view on output '{name}' "
                                   "(ONNX Runtime vs torch): not written")
        return model


def block_weights(blocks: list[tuple[range, dict[str, np.ndarray]]],
                  reads: dict[str, set[int]]) -> dict[str, np.ndarray]:
    """The weights of a candidate's blocks (each with the units it covers, in unit order): each
    layer's from the block holding a unit whose channels it reads, the one where it lost the
    input channels it loses in the candidate; else from the first block that holds it. A chain
    unit's block runs on into the next module: the layer there that reads its pruned channels
    keeps the weights fitted to them, while that module's other layers, cut by the next unit,
    come from the next unit's block (symbols, the stem and the SE unit after it at 0.5: 0.84
    with all of them from the stem's block, where they were never cut; 0.89 so)."""
    chosen: dict[str, tuple[bool, np.ndarray]] = {}
    for units, arrays in blocks:
        for name, full in arrays.items():
            cut_here = not reads.get(name, set()).isdisjoint(units)
            if name not in chosen or (cut_here and not chosen[name][0]):
                chosen[name] = (cut_here, full)
    return {name: full for name, (_, full) in chosen.items()}


def _take(full: np.ndarray, entries: list[dict]) -> np.ndarray:
    """A block's teacher-shaped weights cut down to this candidate's kept positions."""
    for entry in entries:
        full = np.take(full, entry["keep"], axis=entry["axis"])
    return full
