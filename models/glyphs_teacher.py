"""The glyphs benchmark teacher: a ResNet-style CNN (five residual modules, BatchNorm) trained on
plenty of rendered glyphs, exported with the legacy exporter in eval mode (BatchNorm folded, as
users will see it), plus the pruning dataset it is judged on.

    python -m models.glyphs_teacher [-o bench-results/glyphs_teacher.onnx] [--force] [--study]

Writes the teacher (cached: rebuilt only with --force or when missing) and the pruning dataset
`glyphs.npz` beside it. `--study` then measures the regime the task exists for (see
benchmarks.tasks.glyphs.TASK_SUMMARY): L1-pruned teachers fine-tuned on the few labels alone,
against the same pruned networks whose modules were trained to reproduce the teacher's module
outputs (the method's block pre-training, on the same few unlabeled train images), and writes
`glyphs_study.json` beside the teacher."""

from __future__ import annotations

import copy
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from benchmarks.tasks.glyphs import CLASSES, DATASET_NAME, make_pruning_dataset, render_glyphs
from models.teacher import SmallResNet, accuracy, build_teacher, stamp, teacher_parser
from onnxwootz.core.modelio import load_model
from onnxwootz.data import Dataset, batches, load_dataset
from onnxwootz.preprocess import Preprocess

PREPROCESS = Preprocess(size=(24, 24), channels=1, scale=1 / 255, mean=(0.5,), std=(0.5,))
STEM = 12
MODULES = ((12, 1), (24, 2), (24, 1), (48, 2), (48, 1))
"""(width, stride) per residual module: 24x24 -> 12x12 -> 6x6."""
EXPANSION = 2
"""Each module's inner channels (what module pruning removes) are twice its width, as in the
over-parameterized teachers the paper prunes: its regime has small candidates that can match
the teacher once their blocks imitate it, and cannot from a few labels alone."""
NUM_CLASSES = len(CLASSES)
TEACHER_SEED = 1000
"""Teacher images come from another seed than the pruning dataset, so they never overlap."""
TEACHER_PER_CLASS = 300
PRUNING_SEED, TRAIN_PER_CLASS, VAL_PER_CLASS, UNLABELED_PER_CLASS = 0, 5, 40, 100
OUTPUT = Path("bench-results/glyphs_teacher.onnx")
DATA_NAME = "glyphs.npz"
MIN_ACCURACY = 0.9
RATES = (0.5, 0.7)


class GlyphsResNet(SmallResNet):
    """Stem conv-BN-ReLU, residual modules (conv-BN-ReLU-conv-BN + skip), global pool, linear."""

    def __init__(self, stem: int = STEM, modules: tuple[tuple[int, int], ...] = MODULES, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(stem, modules, num_classes, EXPANSION)


def export(model: nn.Module, val_accuracy: float) -> onnx.ModelProto:
    """Legacy exporter, eval mode (BatchNorm folded into the convs), dynamic batch, metadata."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose; its deprecation is noise
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.zeros(1, PREPROCESS.channels, *PREPROCESS.size),), buffer, dynamo=False,
            opset_version=17, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return stamp(onnx.load_from_string(buffer.getvalue()), "onnxwootz models.glyphs_teacher",
                 f"ResNet-style classifier of {NUM_CLASSES} rendered glyph classes: the glyphs benchmark teacher.",
                 PREPROCESS, DATASET_NAME, val_accuracy)


# ---- the study: plain-torch pruning of the exported (BN-folded) teacher ----

class FoldedModule(nn.Module):
    """A residual module after BatchNorm folding: relu(conv2(relu(conv1 x)) + skip x)."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, project: nn.Conv2d | None) -> None:
        super().__init__()
        self.conv1, self.conv2, self.project = conv1, conv2, project

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.project is None else self.project(x)
        return F.relu(self.conv2(F.relu(self.conv1(x))) + skip)


class FoldedNet(nn.Module):
    """The teacher as the ONNX file holds it; `taps` returns every module's input and output."""

    def __init__(self, stem: nn.Conv2d, body: list[FoldedModule], fc: nn.Linear) -> None:
        super().__init__()
        self.stem, self.body, self.fc = stem, nn.ModuleList(body), fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for module in self.body:
            x = module(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.stem(x))
        values = [x]
        for module in self.body:
            x = module(x)
            values.append(x)
        return values


def _conv(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> nn.Conv2d:
    weight, bias = weights[node.input[1]], weights[node.input[2]]
    stride = next((list(a.ints)[0] for a in node.attribute if a.name == "strides"), 1)
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], stride=stride, padding=weight.shape[2] // 2)
    conv.weight.data = torch.from_numpy(weight.copy())
    conv.bias.data = torch.from_numpy(bias.copy())
    return conv


def folded_from_onnx(model: onnx.ModelProto) -> FoldedNet:
    """Rebuild the torch view from the exported graph's Conv nodes in execution order (stem,
    then per module conv1, conv2 and the projection where the shape changes) and its Gemm."""
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    convs = [_conv(node, weights) for node in model.graph.node if node.op_type == "Conv"]
    gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
    fc = nn.Linear(*weights[gemm.input[1]].shape[::-1])
    fc.weight.data = torch.from_numpy(weights[gemm.input[1]].copy())
    fc.bias.data = torch.from_numpy(weights[gemm.input[2]].copy())
    body, index = [], 1
    for _, stride in MODULES:
        conv1, conv2 = convs[index], convs[index + 1]
        changes = stride != 1 or conv1.in_channels != conv2.out_channels
        body.append(FoldedModule(conv1, conv2, convs[index + 2] if changes else None))
        index += 3 if changes else 2
    return FoldedNet(convs[0], body, fc).eval()


def l1_prune(net: FoldedNet, rate: float) -> FoldedNet:
    """A copy with `rate` of each module's inner filters (conv1 outputs, the module's top conv
    kept) removed, the smallest L1 norms first: the baseline's starting point."""
    pruned = copy.deepcopy(net)
    for module in pruned.body:
        conv1, conv2 = module.conv1, module.conv2
        keep_count = conv1.out_channels - int(round(conv1.out_channels * rate))
        keep = torch.argsort(conv1.weight.abs().sum(dim=(1, 2, 3)), descending=True)[:keep_count].sort().values
        new1 = nn.Conv2d(conv1.in_channels, keep_count, conv1.kernel_size, conv1.stride, conv1.padding)
        new1.weight.data, new1.bias.data = conv1.weight.data[keep].clone(), conv1.bias.data[keep].clone()
        new2 = nn.Conv2d(keep_count, conv2.out_channels, conv2.kernel_size, conv2.stride, conv2.padding)
        new2.weight.data, new2.bias.data = conv2.weight.data[:, keep].clone(), conv2.bias.data.clone()
        module.conv1, module.conv2 = new1, new2
    return pruned



def fine_tune(net: FoldedNet, data: Dataset, steps: int, optimizer: str, lr: float, seed: int,
              eval_every: int = 50, batch_size: int = 32) -> list[float]:
    """Cross-entropy on the few labelled train images only; val accuracy before the first step
    and every `eval_every` steps (the B3 protocol's checks)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = list(net.parameters())
    opt = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr, momentum=0.9)
    history, step = [accuracy(net, data.x_val, data.y_val)], 0
    while step < steps:
        for xb, yb in batches(data.x_train, data.y_train, batch_size, rng):
            net.train()
            loss = F.cross_entropy(net(torch.from_numpy(xb)), torch.from_numpy(yb))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % eval_every == 0:
                history.append(accuracy(net, data.x_val, data.y_val))
            if step == steps:
                break
    return history


def distill_blocks(student: FoldedNet, teacher: FoldedNet, images: np.ndarray, steps: int, lr: float, seed: int,
                   batch_size: int = 32) -> float:
    """The method's block pre-training, multiplexed: one teacher pass per batch gives every
    module's input and output; each pruned module learns to map the teacher's input to the
    teacher's output (MSE). No labels. Returns the last batch's summed loss."""
    rng = np.random.default_rng(seed)
    params = [p for module in student.body for p in module.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    teacher.eval()
    loss = torch.zeros(())
    step = 0
    while step < steps:
        for xb, _ in batches(images, np.zeros(len(images)), batch_size, rng):
            with torch.no_grad():
                taps = teacher.taps(torch.from_numpy(xb))
            loss = sum(F.mse_loss(module(taps[i]), taps[i + 1]) for i, module in enumerate(student.body))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    return float(loss.detach())


FINE_TUNES = (("adam", 1e-3), ("adam", 3e-4), ("sgd", 1e-2), ("sgd", 1e-3))
"""Label-only fine-tuning settings tried per rate; the best of them is the baseline's gap."""


def study(teacher_path: Path, data: Dataset, steps: int, seed: int) -> dict:
    """Gap to the teacher of L1-pruned networks fine-tuned on labels alone, next to block-trained
    ones (right after assembly, and after a gentle label fine-tune)."""
    teacher = folded_from_onnx(load_model(teacher_path))
    teacher_acc = accuracy(teacher, data.x_val, data.y_val)
    rows: dict = {"teacher": teacher_acc, "steps": steps, "rates": {}}
    for rate in RATES:
        row: dict = {"l1_pruned": accuracy(l1_prune(teacher, rate), data.x_val, data.y_val), "label_only": {}}
        for optimizer, lr in FINE_TUNES:
            history = fine_tune(l1_prune(teacher, rate), data, steps, optimizer, lr, seed)
            row["label_only"][f"{optimizer}@{lr:g}"] = {"final": history[-1], "best": max(history), "history": history}
        student = l1_prune(teacher, rate)
        start = time.perf_counter()
        row["blocks_loss"] = distill_blocks(student, teacher, data.x_train, steps, 1e-3, seed)
        row["blocks_seconds"] = time.perf_counter() - start
        row["blocks_assembled"] = accuracy(student, data.x_val, data.y_val)
        history = fine_tune(student, data, steps, "adam", 1e-4, seed)
        row["blocks_then_label"] = {"final": history[-1], "best": max(history), "history": history}
        rows["rates"][str(rate)] = row
    return rows


def _print_study(rows: dict) -> None:
    teacher = rows["teacher"]
    print(f"teacher val accuracy {teacher:.4f}; fine-tuning {rows['steps']} steps, batch 32")
    for rate, row in rows["rates"].items():
        print(f"rate {rate}: L1-pruned {row['l1_pruned']:.4f}")
        for name, result in row["label_only"].items():
            print(f"  label-only {name:10s} final {result['final']:.4f}  best {result['best']:.4f}"
                  f"  gap(best) {100 * (teacher - result['best']):+.2f} pts")
        print(f"  blocks (MSE, train images, no labels): assembled {row['blocks_assembled']:.4f}"
              f"  gap {100 * (teacher - row['blocks_assembled']):+.2f} pts ({row['blocks_seconds']:.1f} s)")
        tuned = row["blocks_then_label"]
        print(f"  blocks + label adam@1e-4: final {tuned['final']:.4f}  best {tuned['best']:.4f}"
              f"  gap(best) {100 * (teacher - tuned['best']):+.2f} pts")


def main(argv: list[str] | None = None) -> None:
    parser = teacher_parser(__doc__.splitlines()[0], OUTPUT, 10, TEACHER_PER_CLASS, "retrain even when the output exists")
    parser.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS)
    parser.add_argument("--unlabeled-per-class", type=int, default=UNLABELED_PER_CLASS,
                        help="unlabeled images per class in the pruning dataset (for block pre-training)")
    parser.add_argument("--study", action="store_true", help="measure the pruning regime (see the module doc)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning / block-training steps in the study")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_path = make_pruning_dataset(args.output.with_name(DATA_NAME), args.train_per_class, VAL_PER_CLASS, PRUNING_SEED,
                                     n_unlabeled_per_class=args.unlabeled_per_class)
    data = load_dataset(str(data_path), PREPROCESS, NUM_CLASSES)
    if args.force or not args.output.exists():
        built = build_teacher(lambda: render_glyphs(args.teacher_per_class, TEACHER_SEED, PREPROCESS.size[0]), PREPROCESS,
                              GlyphsResNet, args.epochs, args.seed, data, export, args.output, MIN_ACCURACY)
        print(f"teacher: {built.parameters} parameters, val accuracy {built.val_accuracy:.4f}, built in "
              f"{built.seconds:.0f} s (rendering {built.render_seconds:.0f} s) -> {args.output}")
    if args.study:
        rows = study(args.output, data, args.steps, args.seed)
        rows["settings"] = {"classes": NUM_CLASSES, "train_per_class": args.train_per_class, "val_per_class": VAL_PER_CLASS}
        args.output.with_name("glyphs_study.json").write_text(json.dumps(rows, indent=2))
        _print_study(rows)


if __name__ == "__main__":
    main()
