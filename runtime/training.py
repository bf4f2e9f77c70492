"""Training loops on torch views of ONNX graphs: evaluation, multiplexed block pre-training
(one teacher pass per batch feeds every student) and fine-tuning with early stopping.

Defaults were chosen by measurement (see benchmarks/b3_exploration.py and the Spec): students
train with Adam under a cosine-decayed learning rate on their MSE divided by the teacher
tensor's variance (so blocks of any scale report comparable losses); fine-tuning uses Adam
at a small learning rate, and none at all when the assembled network already meets the bound."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from onnxwootz.progress import NULL_PROGRESS, Progress
from onnxwootz.runtime.devices import autocast_context, prepare_input, prepare_module
from onnxwootz.runtime.torch_graph import TorchGraph, named_onnx_parameters

CALIBRATION_BATCHES = 4
"""How many batches of the training images fix each teacher tensor's variance."""


def tensors(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return prepare_input(torch.from_numpy(np.ascontiguousarray(x)), device), torch.from_numpy(y).long().to(device)


@torch.no_grad()
def evaluate(view: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy of a classifier view (eval mode, restored afterwards)."""
    was_training = view.training
    view.eval()
    correct = 0
    for start in range(0, len(x), batch):
        logits = view(x[start:start + batch])
        correct += int((logits.argmax(dim=1) == y[start:start + batch]).sum())
    view.train(was_training)
    return correct / max(len(x), 1)


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are exactly `names` (taps for multiplexed training)."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    del tapped.graph.output[:]
    for name in names:
        tapped.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return tapped


@dataclasses.dataclass
class Student:
    """A pruned block to train: reads teacher tensor `entry`, imitates `exit` (at `keep`)."""

    key: str
    view: TorchGraph
    entry: str
    exit: str
    keep: np.ndarray | None = None


def _as_tuple(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


@torch.no_grad()
def _tap_variances(teacher_view: torch.nn.Module, x: torch.Tensor, batch: int, device: torch.device,
                   autocast: bool) -> list[float]:
    """Each tapped teacher tensor's variance over a fixed calibration set (the first
    CALIBRATION_BATCHES batches of `x`), accumulated batch by batch to bound memory."""
    totals: list[list[float]] = []
    for start in range(0, min(len(x), CALIBRATION_BATCHES * batch), batch):
        with autocast_context(device, autocast):
            outputs = _as_tuple(teacher_view(x[start:start + batch]))
        if not totals:
            totals = [[0.0, 0.0, 0.0] for _ in outputs]
        for total, output in zip(totals, outputs):
            values = output.double()
            total[0] += float(values.sum())
            total[1] += float(values.square().sum())
            total[2] += values.numel()
    variances = []
    for total_sum, total_square, count in totals:
        mean = total_sum / count
        variances.append(max(total_square / count - mean * mean, 1e-12))
    return variances


def _cosine(optimizer: torch.optim.Optimizer, lr: float, step: int, steps: int) -> None:
    """Cosine decay from `lr` towards 0: a short fixed budget ends on small, settling steps."""
    for group in optimizer.param_groups:
        group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / max(steps, 1)))


def pretrain_blocks(teacher: onnx.ModelProto, students: list[Student], x: torch.Tensor, steps: int, batch: int,
                    lr: float, weight_decay: float, seed: int, device: torch.device,
                    progress: Progress = NULL_PROGRESS, autocast: bool = True) -> dict[str, float]:
    """Train all students together: per batch one teacher forward pass (all block boundaries
    as outputs), then each student's MSE to its teacher counterpart, divided by that teacher
    tensor's variance. Adam, cosine-decayed `lr`. The students share nothing but the batches,
    so each ends exactly as it would training alone with the same seed. Returns each student's
    mean relative loss over the last 10% of steps (0: perfect imitation, 1: no better than
    the target's mean)."""
    taps = sorted({s.entry for s in students} | {s.exit for s in students})
    teacher_view = prepare_module(TorchGraph(with_outputs(teacher, taps)), device).eval()
    for parameter in teacher_view.parameters():
        parameter.requires_grad_(False)
    position = {name: i for i, name in enumerate(taps)}
    variance = _tap_variances(teacher_view, x, batch, device, autocast)
    keeps = {s.key: (torch.from_numpy(s.keep).to(device) if s.keep is not None else None) for s in students}
    params = []
    for student in students:
        prepare_module(student.view, device).train()
        params += [p for _, p in named_onnx_parameters(student.view)]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    tail = max(1, steps // 10)
    history: dict[str, list[float]] = {s.key: [] for s in students}
    with progress.task(f"pre-training {len(students)} block(s)", total=steps) as task:
        for step in range(steps):
            _cosine(optimizer, lr, step, steps)
            index = torch.randint(0, len(x), (batch,), generator=generator).to(device)
            with torch.no_grad(), autocast_context(device, autocast):
                outputs = _as_tuple(teacher_view(x[index]))
            total = torch.zeros((), device=device)
            for student in students:
                target = outputs[position[student.exit]].float()
                keep = keeps[student.key]
                if keep is not None:
                    target = target.index_select(1, keep)
                with autocast_context(device, autocast):
                    prediction = student.view(outputs[position[student.entry]].float())
                loss = F.mse_loss(prediction.float(), target) / variance[position[student.exit]]
                total = total + loss
                if step >= steps - tail:
                    history[student.key].append(float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            task.advance(1, loss=float(total.detach()) / max(len(students), 1))
    for student in students:
        student.view.eval()
    return {key: float(np.mean(values)) if values else float("nan") for key, values in history.items()}


@dataclasses.dataclass
class FineTuneOutcome:
    curve: list[tuple[int, float]]  # (step, validation accuracy); step 0 is right after assembly
    met: bool
    steps: int

    @property
    def accuracy(self) -> float:
        return self.curve[-1][1]


def finetune(view: TorchGraph, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
             bound: float, steps: int, batch: int, lr: float, weight_decay: float, eval_every: int, seed: int,
             progress: Progress = NULL_PROGRESS, description: str = "fine-tuning", autocast: bool = True,
             patience: int = 0) -> FineTuneOutcome:
    """Evaluate right after assembly (0 steps when that already meets `bound`); otherwise
    fine-tune with cross-entropy (Adam), evaluating every `eval_every` steps and stopping as
    soon as validation accuracy reaches `bound`, or (with `patience` > 0) once that many
    evaluations in a row have not improved on the best so far: a candidate on a plateau below
    the bound gives back the rest of its budget."""
    curve = [(0, evaluate(view, x_val, y_val))]
    if curve[-1][1] >= bound or steps == 0:
        return FineTuneOutcome(curve, curve[-1][1] >= bound, 0)
    params = [p for _, p in named_onnx_parameters(view)]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    device = x.device
    best, stale = curve[0][1], 0
    view.train()
    with progress.task(description, total=steps) as task:
        for step in range(1, steps + 1):
            index = torch.randint(0, len(x), (batch,), generator=generator).to(device)
            with autocast_context(device, autocast):
                loss = F.cross_entropy(view(x[index]).float(), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            task.advance(1, loss=float(loss.detach()))
            if step % eval_every == 0 or step == steps:
                curve.append((step, evaluate(view, x_val, y_val)))
                view.train()
                if curve[-1][1] >= bound:
                    break
                best, stale = (curve[-1][1], 0) if curve[-1][1] > best else (best, stale + 1)
                if patience and stale >= patience:
                    break
    view.eval()
    return FineTuneOutcome(curve, curve[-1][1] >= bound, curve[-1][0])
