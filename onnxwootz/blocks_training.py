"""Block pre-training for a run: each tuning block sliced out of the L1-pruned teacher as a
student span (least-squares start or plain L1), trained against the teacher's tensors at its
boundaries (multiplexed: one pass trains every block it is given), its weights scattered back
into teacher-shaped tensors, saved in the run directory and journaled (a BlockEvent). A block
already journaled is never trained again."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import numpy as np
import onnx

from onnxwootz.context import RunContext
from onnxwootz.events import BlockEvent
from onnxwootz.journal import fingerprint
from onnxwootz.tuning_blocks import BlockSet, TuningBlock

if TYPE_CHECKING:
    from onnxwootz.runtime.training import TeacherTaps

RECONSTRUCTION_IMAGES = 256
"""Images for the least-squares start of a block: enough rows for a well-posed fit, few enough
that it costs a small fraction of pre-training."""


def block_file(block: TuningBlock) -> str:
    """Where a block's weights live in the run directory: named by its span and rates, so the
    same block of another candidate set is the same file."""
    return f"blocks/{fingerprint(block.start, list(block.rates))}.safetensors"


class BlockTrainer:
    """Pre-trains a run's tuning blocks; holds the teacher's boundary tensors between passes."""

    def __init__(self, context: RunContext, blockset: BlockSet):
        self.context, self.blockset = context, blockset
        self._taps: "TeacherTaps | None" = None  # built by the first pass, reused by the later ones

    def ensure(self, candidate: int) -> None:
        """Lazy pre-training: the blocks candidate `candidate` needs, trained when first reached.
        Block weights depend only on the block and the seed (every pass draws the same batches
        and students are independent), so the grouping of a pass never changes a result."""
        if self.context.spec.pretrain == "lazy":
            self.train(self.blockset.composites[candidate].blocks)

    def train(self, indices: Sequence[int]) -> None:
        """Pre-train, in one multiplexed pass, the blocks of `indices` not journaled yet."""
        import torch

        from onnxwootz.pruning import prune_prepared
        from onnxwootz.runtime.reconstruction import TeacherTargets, reconstruct_span
        from onnxwootz.runtime.torch_graph import TorchGraph
        from onnxwootz.runtime.training import Student, TeacherTaps, pretrain_blocks

        context = self.context
        spec, prepared, rundir = context.spec, context.prepared, context.rundir
        todo = [b for b in indices if rundir.find("block", file=block_file(self.blockset.blocks[b])) is None]
        if not todo:
            return
        started = time.perf_counter()
        students, pruned_of = [], {}
        plan = prepared.units(spec.granularity)
        for b in todo:
            block = self.blockset.blocks[b]
            span = plan.span(block.start, block.stop)
            config = {name: 0.0 for name in context.unit_names}
            config.update({unit.name: rate for unit, rate in zip(context.units[block.start:block.stop], block.rates)})
            pruned = prune_prepared(prepared, config, spec.granularity, spec.round_to)
            student_span, keeps = pruned.span_model(prepared, span)
            entries = tuple(value.name for value in student_span.graph.input)
            if spec.start() == "lsq":
                targets = TeacherTargets(prepared.model, context.dataset.x_inputs[:RECONSTRUCTION_IMAGES],
                                         threads=torch.get_num_threads())
                reconstruct_span(targets, student_span, entries, pruned.canonical_slices)
            axes = tuple(prepared.analysis.channel_axis(name, len(prepared.shapes[name])) for name in span.exits)
            students.append(Student(block_file(block), TorchGraph(student_span), entries, tuple(span.exits),
                                    tuple(keeps), axes, outside_layers(plan.reads, range(block.start, block.stop))))
            pruned_of[block_file(block)] = pruned
        if self._taps is None:
            self._taps = TeacherTaps(prepared.model, plan.boundaries, context.x_inputs, context.device)
        fits = pretrain_blocks(self._taps, students, spec.pretrain_config(), context.device, context.progress)
        seconds = (time.perf_counter() - started) / len(students)
        for student, b in zip(students, todo):
            trained = {init.name: onnx.numpy_helper.to_array(init) for init in student.view.to_onnx().graph.initializer
                       if init.name in student.view.param_names}
            slices = pruned_of[student.key].canonical_slices
            arrays = {name: scatter(context.teacher_arrays[name], value, slices.get(name, []))
                      for name, value in trained.items()}
            rundir.save_arrays(student.key, arrays)
            fit = fits[student.key]
            rundir.record(BlockEvent(student.key, b, self.blockset.blocks[b].symbols, fit.loss, fit.start_loss,
                                     fit.kept_start, seconds).to_event())


def outside_layers(reads: dict[str, set[int]], units: range) -> frozenset[str]:
    """The weights a block covering `units` keeps as the teacher's (cut to its filters): those
    of layers reading the channels of a unit outside it, the layers a chain unit's block runs
    on into and refits; assembly takes them from that block (candidates.block_weights), so the
    block's other layers must learn to work with them unchanged. On symbols, an SE unit after
    a chain unit assembled 0.89 with both blocks training its expand conv, 0.96 so."""
    return frozenset(name for name, read in reads.items() if not read.issubset(units))


def scatter(teacher: np.ndarray, student: np.ndarray, entries: list[dict]) -> np.ndarray:
    """Student values written into a copy of the teacher tensor at the kept positions."""
    full = teacher.copy()
    index = [np.arange(n) for n in teacher.shape]
    for entry in entries:
        index[entry["axis"]] = np.asarray(entry["keep"])
    full[np.ix_(*index)] = student
    return full
