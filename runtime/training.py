"""Training loops on torch views of ONNX graphs: evaluation, the teacher's tensors at block
boundaries or outputs (held for the whole image pool when they fit, else one teacher pass per
batch), multiplexed block pre-training (every student reads the same batch of them) and
fine-tuning with early stopping, on labels or by distilling every teacher output (a loss per
output kind, from the op that produces it).

Defaults were chosen by measurement (see benchmarks/b3_exploration.py and the Spec): students
train with Adam under a cosine-decayed learning rate on their MSE divided by the teacher
tensor's variance (so blocks of any scale report comparable losses); fine-tuning uses Adam
at a small learning rate, and none at all when the assembled network already meets the bound."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from onnxwootz.core.progress import NULL_PROGRESS, Progress
from onnxwootz.runtime.devices import as_layout, autocast_context, prepare_input, prepare_module
from onnxwootz.runtime.torch_graph import TorchGraph, named_onnx_parameters

WARMUP_FRACTION = 10
"""Pre-training warms its learning rate up over the first 1/this of its steps."""
KD_TEMPERATURE = 4.0
CALIBRATION_BATCHES = 4
"""How many batches of the training images fix each teacher tensor's variance."""
EXACT_LOSS = 1e-9
"""A student whose relative loss starts below this already imitates its exits and is not
trained: a chain unit's block (its output group pruned, nothing pruned inside it) keeps the
teacher's own filters for the kept channels. 15 of PP-OCRv4 detector's first 24 blocks."""
TAP_CACHE_BYTES = 1 << 30
"""Teacher tensors for the whole image pool are held in memory up to this size (glyphs: 0.2 GB
in bf16, 0.4 GB in float32)."""
CACHE_BATCH = 256
"""Images per teacher pass when computing the held tensors."""


def tensors(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return prepare_input(torch.from_numpy(np.ascontiguousarray(x)), device), torch.from_numpy(y).long().to(device)


def evaluate(view: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy of a classifier view (eval mode, restored afterwards)."""
    if len(x) == 0:
        return 0.0
    return int((predict(view, x, batch).argmax(dim=1) == y).sum()) / len(x)


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are exactly `names` (taps for multiplexed training),
    without the nodes that none of them needs: a teacher tapped early stops computing there."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    has_subgraphs = any(attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                        for node in model.graph.node for attribute in node.attribute)
    if not has_subgraphs:  # a subgraph may read outer names that its node does not list: keep everything
        needed, kept = set(names), []
        for node in reversed(model.graph.node):
            if any(output in needed for output in node.output):
                kept.append(node)
                needed.update(node.input)
        del tapped.graph.node[:]
        tapped.graph.node.extend(reversed(kept))
        live = [init for init in model.graph.initializer if init.name in needed]
        del tapped.graph.initializer[:]
        tapped.graph.initializer.extend(live)
    del tapped.graph.output[:]
    for name in names:
        tapped.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return tapped


@torch.no_grad()
def predict(view: torch.nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """A view's outputs on all of `x` (eval mode, restored afterwards), as float32."""
    was_training = view.training
    view.eval()
    outputs = torch.cat([view(x[start:start + batch]).float() for start in range(0, len(x), batch)])
    view.train(was_training)
    return outputs


@dataclasses.dataclass
class Student:
    """A pruned block to train: reads teacher tensors `entries` (the view's inputs, in order)
    and imitates `exits` (its outputs, in order), each at its `keeps` channels (None: all) on its
    channel axis (`axes`: 1, or the last axis of a channels-last exit). Initializers in `frozen`
    keep their values: another block trains them."""

    key: str
    view: TorchGraph
    entries: tuple[str, ...]
    exits: tuple[str, ...]
    keeps: tuple[np.ndarray | None, ...] = ()
    axes: tuple[int, ...] = ()
    frozen: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.keeps = self.keeps or (None,) * len(self.exits)
        self.axes = self.axes or (1,) * len(self.exits)

    @property
    def boundary(self) -> set[str]:
        return set(self.entries) | set(self.exits)


def _as_tuple(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


class TeacherTaps:
    """The teacher's tensors at named taps (block boundaries) for rows of the image pool `x`.

    When they fit in `budget` bytes for the whole pool (as computed, else in bf16), they are
    computed once (batches of CACHE_BATCH, no gradients) and held on the device: a pre-training
    step then runs no teacher at all (on the bundled glyphs teacher that is a third of a
    multiplexed step), and every later lazy pass reuses them. Otherwise each batch runs the
    teacher, tapped at just the names asked for. Both run the same torch view, so they give the
    same values; which of the two is fixed at construction, from every name that may be asked
    for, so a result never depends on how blocks are grouped into passes."""

    def __init__(self, teacher: onnx.ModelProto, names: Sequence[str], x: torch.Tensor, device: torch.device,
                 autocast: bool = True, budget: int = TAP_CACHE_BYTES) -> None:
        self.teacher, self.x, self.device, self.autocast = teacher, x, device, autocast
        self.feed = teacher.graph.input[0].name
        self._views: dict[tuple[str, ...], torch.nn.Module] = {}
        self._variances: dict[str, float] = {}
        self.cache: dict[str, torch.Tensor] | None = None
        computed = sorted(set(names) - {self.feed})
        first = self._run(computed, x[:1])
        per_image = sum(value.element_size() * value[0].numel() for value in first)
        if per_image * len(x) <= budget:
            held = None
        elif sum(2 * value[0].numel() for value in first) * len(x) <= budget:
            held = torch.bfloat16  # float32 does not fit, bf16 does: half the bytes, targets to 3 digits
        else:
            return
        batches = [tuple(v if held is None or not v.is_floating_point() else v.to(held)
                         for v in self._run(computed, x[start:start + CACHE_BATCH]))
                   for start in range(0, len(x), CACHE_BATCH)]
        self.cache = {name: torch.cat([batch[i] for batch in batches]) for i, name in enumerate(computed)}

    def __len__(self) -> int:
        return len(self.x)

    @torch.no_grad()
    def _run(self, names: Sequence[str], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The teacher on `x`, tapped at `names` (one view per distinct set of names)."""
        if not names:
            return ()
        key = tuple(names)
        if key not in self._views:
            example = {self.feed: [1, *self.x.shape[1:]]}  # for ranks inference alone cannot tell
            view = prepare_module(TorchGraph(with_outputs(self.teacher, names), example), self.device).eval()
            for parameter in view.parameters():
                parameter.requires_grad_(False)
            self._views[key] = view
        with autocast_context(self.device, self.autocast):
            return _as_tuple(self._views[key](as_layout(x)))

    def rows(self, index: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The tensors at `names` (float32) for the pool rows `index`."""
        values = {self.feed: as_layout(self.x[index])} if self.feed in names else {}
        wanted = sorted(set(names) - {self.feed})
        if self.cache is not None:
            return values | {name: as_layout(self.cache[name].index_select(0, index).float()) for name in wanted}
        return values | {name: output.float() for name, output in zip(wanted, self._run(wanted, self.x[index]))}

    def variance(self, name: str, batch: int) -> float:
        """The tensor's variance over a fixed calibration set (the first CALIBRATION_BATCHES
        batches of the pool), accumulated batch by batch to bound memory."""
        if name not in self._variances:
            total = total_square = count = 0.0
            for start in range(0, min(len(self.x), CALIBRATION_BATCHES * batch), batch):
                index = torch.arange(start, min(start + batch, len(self.x)), device=self.x.device)
                values = self.rows(index, [name])[name].double()
                total += float(values.sum())
                total_square += float(values.square().sum())
                count += values.numel()
            mean = total / count
            self._variances[name] = max(total_square / count - mean * mean, 1e-12)
        return self._variances[name]


def _cosine(optimizer: torch.optim.Optimizer, lr: float, step: int, steps: int, warmup: int = 0) -> None:
    """Linear warm-up over `warmup` steps (Adam's first steps move every weight by about `lr`,
    which would wreck a least-squares start), then cosine decay towards 0: a short fixed budget
    ends on small, settling steps."""
    scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
    for group in optimizer.param_groups:
        group["lr"] = lr * scale * 0.5 * (1.0 + math.cos(math.pi * step / max(steps, 1)))


@dataclasses.dataclass
class BlockFit:
    """A pre-trained student's relative loss on the calibration rows, before and after training.
    `kept_start` is set when training ended worse than it began (a learning rate too large for
    the block's weights: 0.01 takes a least-squares start of a PP-OCRv4 block from 0.001 to
    0.07) and the starting weights were put back."""

    loss: float
    start_loss: float
    kept_start: bool


def _imitation(student: Student, outputs: dict[str, torch.Tensor], keeps: tuple[torch.Tensor | None, ...],
               device: torch.device, autocast: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per exit, the student's output (float32) on its entry tensors and the teacher's tensor
    it imitates, narrowed to the channels the block keeps."""
    with autocast_context(device, autocast):
        predictions = _as_tuple(student.view(*(outputs[name] for name in student.entries)))
    targets = [outputs[name] if keep is None else outputs[name].index_select(axis, keep)
               for name, keep, axis in zip(student.exits, keeps, student.axes)]
    return [(prediction.float(), target) for prediction, target in zip(predictions, targets)]


def _relative_loss(pairs: list[tuple[torch.Tensor, torch.Tensor]], student: Student,
                   variance: dict[str, float]) -> torch.Tensor:
    """The mean over a student's exits of MSE divided by the teacher tensor's variance."""
    losses = [F.mse_loss(prediction, target) / variance[name] for (prediction, target), name in zip(pairs, student.exits)]
    return torch.stack(losses).mean()


def _calibration_losses(taps: TeacherTaps, students: list[Student], keeps: dict[str, tuple[torch.Tensor | None, ...]],
                        variance: dict[str, float], batch: int, device: torch.device, autocast: bool) -> dict[str, float]:
    """Each student's relative loss (eval mode) over the calibration rows that fix the variances."""
    names = sorted(set().union(*(s.boundary for s in students)))
    sums = {s.key: np.zeros(len(s.exits)) for s in students}
    counts = {s.key: np.zeros(len(s.exits)) for s in students}
    for student in students:
        student.view.eval()
    with torch.no_grad():
        for start in range(0, min(len(taps), CALIBRATION_BATCHES * batch), batch):
            index = torch.arange(start, min(start + batch, len(taps)), device=taps.x.device)
            outputs = taps.rows(index, names)
            for student in students:
                pairs = _imitation(student, outputs, keeps[student.key], device, autocast)
                for position, (prediction, target) in enumerate(pairs):
                    sums[student.key][position] += float(F.mse_loss(prediction, target, reduction="sum"))
                    counts[student.key][position] += target.numel()
    return {s.key: float(np.mean([total / max(count, 1) / variance[name]
                                  for total, count, name in zip(sums[s.key], counts[s.key], s.exits)]))
            for s in students}


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """How tuning blocks are pre-trained (a run's come from its Spec: `Spec.pretrain_config`)."""

    steps: int
    batch: int
    lr: float
    weight_decay: float
    seed: int
    autocast: bool = True


def pretrain_blocks(taps: TeacherTaps, students: list[Student], config: PretrainConfig, device: torch.device,
                    progress: Progress = NULL_PROGRESS) -> dict[str, BlockFit]:
    """Train all students together: per batch the teacher's tensors at every block boundary
    (one teacher pass, or none when `taps` holds them), then each student's MSE to its teacher
    counterpart, divided by that teacher tensor's variance (averaged over a block's exits).
    Adam, warmed-up then cosine-decayed `config.lr`. The students share nothing but the batches,
    so each ends exactly as it would training alone with the same seed. Each student's relative
    loss (0: perfect imitation, 1: no better than the target's mean) is measured on the
    calibration rows before and after; a student that training made worse gets its starting
    weights back, so pre-training never undoes a least-squares start. A student that starts
    exact (EXACT_LOSS) is left as it is."""
    steps, batch, lr, autocast = config.steps, config.batch, config.lr, config.autocast
    names = sorted(set().union(*(s.boundary for s in students)))
    variance = {name: taps.variance(name, batch) for s in students for name in s.exits}
    keeps = {s.key: tuple(torch.from_numpy(keep).to(device) if keep is not None else None for keep in s.keeps)
             for s in students}
    for student in students:
        prepare_module(student.view, device)
    before = _calibration_losses(taps, students, keeps, variance, batch, device, autocast)
    starts = {s.key: {k: v.detach().clone() for k, v in s.view.state_dict().items()} for s in students}
    learners = [s for s in students if before[s.key] > EXACT_LOSS]
    params = [p for student in learners for name, p in named_onnx_parameters(student.view)
              if name not in student.frozen]
    for student in learners:
        student.view.train()
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay) if learners else None
    generator = torch.Generator().manual_seed(config.seed)
    with progress.task(f"pre-training {len(learners)} block(s)", total=steps if learners else 0) as task:
        for step in range(steps if learners else 0):
            _cosine(optimizer, lr, step, steps, warmup=steps // WARMUP_FRACTION)
            index = torch.randint(0, len(taps), (batch,), generator=generator).to(taps.x.device)
            outputs = taps.rows(index, names)
            total = torch.zeros((), device=device)
            for student in learners:
                pairs = _imitation(student, outputs, keeps[student.key], device, autocast)
                total = total + _relative_loss(pairs, student, variance)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            task.advance(1, loss=float(total.detach()) / len(learners))
    after = _calibration_losses(taps, students, keeps, variance, batch, device, autocast)
    fits = {}
    for student in students:
        worse = after[student.key] > before[student.key]
        if worse:
            student.view.load_state_dict(starts[student.key])
        fits[student.key] = BlockFit(before[student.key] if worse else after[student.key], before[student.key], worse)
    return fits


class Scored(NamedTuple):
    """A view's validation metric and its floor: the value less its noise margin, which is what
    must reach the bound (a value measured on a few hundred images is the luckiest among many
    candidates exactly when it passes, so the margin keeps answers within the bound on new data;
    `prune` also caps it by the slack on a held-out confirmation split, onnxwootz.candidates)."""

    value: float
    floor: float

    @classmethod
    def exact(cls, value: float) -> "Scored":
        """A value held to the bound as it is (no margin)."""
        return cls(value, value)


@dataclasses.dataclass
class FineTuneOutcome:
    curve: list[tuple[int, float]]  # (step, validation accuracy); step 0 is right after assembly
    met: bool
    steps: int
    floor: float  # the last evaluation's floor (its value less the noise margin)

    @property
    def accuracy(self) -> float:
        return self.curve[-1][1]


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = KD_TEMPERATURE) -> torch.Tensor:
    """Hinton's knowledge distillation: KL from the teacher's softened outputs, scaled by T^2
    so that its gradients keep their size whatever the temperature."""
    return F.kl_div(F.log_softmax(logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature ** 2


_PASS_THROUGH = ("Identity",)
PROBABILITY_FLOOR = 1e-7
"""Probabilities are clamped to [floor, 1 - floor] before their log: a student's exact 0 would
give an infinite loss."""


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """How to distil one graph output: from the op that produces it (`axis`: the softmax's)."""

    kind: str
    axis: int = -1


def output_kinds(model: onnx.ModelProto, shapes: dict[str, Sequence[int]]) -> list[OutputKind]:
    """One OutputKind per graph output: Softmax -> "softmax" (its axis), Sigmoid -> "sigmoid",
    another 2-D output -> "logits", anything else -> "tensor"."""
    producer = {name: node for node in model.graph.node for name in node.output}
    kinds = []
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Softmax":
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            kinds.append(OutputKind("softmax", axis))
        elif node is not None and node.op_type == "Sigmoid":
            kinds.append(OutputKind("sigmoid"))
        elif len(shapes.get(output.name, ())) == 2:
            kinds.append(OutputKind("logits"))
        else:
            kinds.append(OutputKind("tensor"))
    return kinds


def output_loss(kind: OutputKind, student: torch.Tensor, teacher: torch.Tensor, variance: float) -> torch.Tensor:
    """The distillation loss of one output (float32, outside autocast: BCE is unsafe under it).
    softmax: KL(teacher || student) on the softmax axis, averaged over every other position;
    sigmoid: binary cross-entropy against the teacher's probabilities, less the teacher's own
    entropy (so a perfect student reads 0); logits: Hinton KD at T = KD_TEMPERATURE; tensor:
    MSE divided by the teacher output's variance (1: no better than its mean)."""
    student, teacher = student.float(), teacher.float()
    if kind.kind == "softmax":
        log_student = student.clamp(PROBABILITY_FLOOR, 1.0).log()
        log_teacher = teacher.clamp(PROBABILITY_FLOOR, 1.0).log()
        positions = teacher.numel() / teacher.shape[kind.axis]
        return (teacher * (log_teacher - log_student)).sum() / positions
    if kind.kind == "sigmoid":
        p = teacher.clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
        q = student.clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
        return (p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())).mean()
    if kind.kind == "logits":
        return distillation_loss(student, teacher)
    return F.mse_loss(student, teacher) / variance


Loss = Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]
"""(the student's outputs on a batch, the batch's row indices in the training pool) -> loss."""
Score = Callable[[torch.nn.Module], Scored]
"""A view -> its validation metric (higher is better) and the floor the bound is checked on."""


def distillation_of(taps: TeacherTaps, names: Sequence[str], kinds: Sequence[OutputKind], batch: int) -> Loss:
    """Distil every teacher output: the sum of each output's `output_loss` against the teacher's
    values for the same pool rows (held by `taps`, or recomputed per batch beyond its budget)."""
    variances = [taps.variance(name, batch) if kind.kind == "tensor" else 1.0 for name, kind in zip(names, kinds)]

    def loss(outputs: tuple[torch.Tensor, ...], index: torch.Tensor) -> torch.Tensor:
        targets = taps.rows(index, names)
        return sum(output_loss(kind, output, targets[name], variance)
                   for output, name, kind, variance in zip(outputs, names, kinds, variances))

    return loss


EVAL_INPUT_ELEMENTS = 1 << 24
"""Input elements per evaluation batch (at most 512 images): 54 PP-OCR det images at 3x320x320,
512 small ones; activations grow with the input, so this bounds evaluation memory too."""


@torch.no_grad()
def predict_outputs(view: torch.nn.Module, x: torch.Tensor, batch: int | None = None) -> list[np.ndarray]:
    """Every output of a view on all of `x` (eval mode, restored afterwards), float32 on the host:
    validation and test outputs stay off the device whatever their size."""
    if batch is None:
        batch = max(1, min(512, EVAL_INPUT_ELEMENTS // max(1, x[0].numel() if len(x) else 1)))
    was_training = view.training
    view.eval()
    chunks = [[o.float().cpu() for o in _as_tuple(view(as_layout(x[start:start + batch])))]
              for start in range(0, len(x), batch)]
    view.train(was_training)
    return [torch.cat([chunk[i] for chunk in chunks]).numpy() for i in range(len(chunks[0]))] if chunks else []


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """How a candidate is fine-tuned (a run's come from its Spec: `Spec.finetune_config`;
    `patience` 0: no early stop on a plateau)."""

    steps: int
    batch: int
    lr: float
    weight_decay: float
    eval_every: int
    seed: int
    patience: int = 0
    projection: bool = False
    """With `patience`: also stop a candidate whose budget cannot take it to the bound."""
    autocast: bool = True
    frozen_statistics: bool = False
    """Train in eval mode: BatchNorm normalizes with (and keeps) its running statistics instead
    of each batch's. Batch-8 statistics took a PP-OCRv4 recognizer candidate from 0.73 to 0.00
    exact strings in 20 steps; on its running statistics it rose to 0.93 in 60 (lr 3e-5)."""


def finetune_with(view: TorchGraph, x: torch.Tensor, loss: Loss, score: Score, bound: float, config: FinetuneConfig,
                  progress: Progress = NULL_PROGRESS, description: str = "fine-tuning") -> FineTuneOutcome:
    """Score right after assembly (0 steps when that already meets `bound`); otherwise fine-tune
    (Adam) on `loss` over random batches of the pool `x`, scoring every `eval_every` steps and
    stopping as soon as the score's floor reaches `bound`, or (with `patience` > 0, the abandon
    rule) once that many evaluations in a row have not improved on the best so far: a candidate
    on a plateau below the bound gives back the rest of its budget; and so (with `projection`)
    does one whose budget cannot take it to the bound (`out_of_reach`), which also stops one that
    fine-tuning hurts (no gain: its best is its start) at its second evaluation. A first
    evaluation below assembly no longer stops it alone: on a few hundred validation images that
    is often noise (glyphs: 0.982 -> 0.976 -> 0.984, then the answer, 86k params against 112k)."""
    steps, batch, eval_every, patience = config.steps, config.batch, config.eval_every, config.patience
    scored = score(view)
    curve = [(0, scored.value)]
    if scored.floor >= bound or steps == 0:
        return FineTuneOutcome(curve, scored.floor >= bound, 0, scored.floor)
    params = [p for _, p in named_onnx_parameters(view)]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    device = x.device
    best, stale = curve[0][1], 0
    training_mode = not config.frozen_statistics
    view.train(training_mode)
    with progress.task(description, total=steps) as task:
        for step in range(1, steps + 1):
            index = torch.randint(0, len(x), (batch,), generator=generator).to(device)
            with autocast_context(device, config.autocast):
                outputs = _as_tuple(view(as_layout(x[index])))
            value = loss(tuple(output.float() for output in outputs), index)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            task.advance(1, loss=float(value.detach()))
            if step % eval_every == 0 or step == steps:
                scored = score(view)
                curve.append((step, scored.value))
                view.train(training_mode)
                if scored.floor >= bound:
                    break
                best, stale = (curve[-1][1], 0) if curve[-1][1] > best else (best, stale + 1)
                if patience and (stale >= patience or config.projection
                                 and out_of_reach(curve, bound, math.ceil((steps - step) / eval_every))):
                    break
    view.eval()
    return FineTuneOutcome(curve, scored.floor >= bound, curve[-1][0], scored.floor)


def out_of_reach(curve: list[tuple[int, float]], bound: float, evaluations_left: int) -> bool:
    """Whether a fine-tuning curve cannot reach `bound` in the evaluations left: its best value
    plus its recent gain (the mean of its last two, per evaluation) for each one left falls
    short. A fine-tuning curve's gains shrink as it goes, so this projection is optimistic and
    the rule stops only candidates that would fall short anyway (symbols, seed 0: 13 candidates
    that ran their 300 steps to 0.80-0.97 against a 0.975 bound would stop after 150-200, 44% of
    the steps, with the same answer)."""
    if len(curve) < 3:
        return False
    gain = max((curve[-1][1] - curve[-3][1]) / 2, 0.0)
    return max(value for _, value in curve) + gain * evaluations_left < bound


def finetune(view: TorchGraph, x: torch.Tensor, y: torch.Tensor | None, x_val: torch.Tensor, y_val: torch.Tensor,
             bound: float, config: FinetuneConfig, progress: Progress = NULL_PROGRESS,
             description: str = "fine-tuning", teacher_logits: torch.Tensor | None = None) -> FineTuneOutcome:
    """`finetune_with` for a classifier scored by top-1 accuracy on (x_val, y_val): cross-entropy
    on the labels `y`, or, given `teacher_logits` (one row per image of `x`, which then needs no
    labels), Hinton distillation from them."""
    loss = labels_loss(y) if teacher_logits is None else (
        lambda outputs, index: distillation_loss(outputs[0], teacher_logits[index]))
    return finetune_with(view, x, loss, lambda v: Scored.exact(evaluate(v, x_val, y_val)), bound, config, progress,
                         description)


def labels_loss(y: torch.Tensor) -> Loss:
    """Cross-entropy of the first output's class scores (flattened per image) against the class
    labels `y` of the pool rows."""
    def loss(outputs: tuple[torch.Tensor, ...], index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs[0].reshape(len(index), -1), y[index])

    return loss
