"""The bundled teacher: a small ResNet-style CNN trained on scikit-learn's digits, small enough
(~43k parameters) that pruning experiments fine-tune it on a CPU in seconds.

`python -m models.teacher` trains it (seeded, CPU), checks it, and writes
`models/digits_resnet.onnx` with its preprocessing, dataset and accuracy in the metadata."""

from __future__ import annotations

import argparse
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

from onnxwootz.core.modelio import save_model
from onnxwootz.data import DIGITS, Dataset, batches, load_dataset
from onnxwootz.preprocess import ACCURACY_KEY, DATASET_KEY, Preprocess, set_metadata

PREPROCESS = Preprocess(size=(16, 16), channels=1, scale=1 / 16, mean=(0.5,), std=(0.5,))
"""Digits are 8x8 with values 0..16: upscale to 16x16 and map to [-1, 1]."""
WIDTHS = (16, 16, 32, 32)
NUM_CLASSES = 10
OUTPUT = Path(__file__).with_name("digits_resnet.onnx")
MIN_ACCURACY = 0.97


class ResidualModule(nn.Module):
    """conv-BN-ReLU-conv-BN plus the skip (a strided 1x1 projection where the shape changes), ReLU.
    `expansion` widens the channels between the two convs."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int = 1) -> None:
        super().__init__()
        inner = out_channels * expansion  # the channels between the two convs: what module pruning removes
        self.conv1 = nn.Conv2d(in_channels, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.project: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.project(x))


class SmallResNet(nn.Module):
    """Stem conv-BN-ReLU, residual modules given as (width, stride), global pool, linear: the
    shape of both bundled teachers."""

    def __init__(self, stem: int, modules: tuple[tuple[int, int], ...], num_classes: int, expansion: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        body, previous = [], stem
        for width, stride in modules:
            body.append(ResidualModule(previous, width, stride, expansion))
            previous = width
        self.body = nn.Sequential(*body)
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DigitsResNet(SmallResNet):
    """Stem conv, four residual modules (stride 2 where the width grows), global pool, linear."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, num_classes: int = NUM_CLASSES) -> None:
        previous, modules = widths[0], []
        for width in widths:
            modules.append((width, 2 if width != previous else 1))
            previous = width
        super().__init__(widths[0], tuple(modules), num_classes)


def _shift(x: torch.Tensor, generator: torch.Generator, pixels: int = 1) -> torch.Tensor:
    """Random translation by up to `pixels` (edge padded): cheap augmentation for 1.4k images."""
    n, _, height, width = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(height)[None, :])[:, None, :, None].expand(n, x.shape[1], height, width + 2 * pixels)
    picked = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(width)[None, :])[:, None, None, :].expand(n, x.shape[1], height, width)
    return picked.gather(3, cols)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((predicted == y).mean())


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int = 64, seed: int = 0,
        augment=None) -> nn.Module:
    """Adam with a one-cycle schedule (peak 3e-3) over `epochs` passes of (x, y)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * (len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    for _ in range(epochs):
        model.train()
        for xb, yb in batches(x, y, batch_size, rng, drop_last=True):
            inputs = torch.from_numpy(xb)
            loss = F.cross_entropy(model(augment(inputs, generator) if augment else inputs), torch.from_numpy(yb))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def fit_fresh(make_net: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, epochs: int, seed: int,
              batch_size: int = 64, augment=None) -> nn.Module:
    """`fit` a network built right after seeding torch, so its initial weights follow `seed`."""
    torch.manual_seed(seed)
    return fit(make_net(), x, y, epochs, batch_size, seed, augment)


def train(data: Dataset, epochs: int = 40, batch_size: int = 64, seed: int = 0) -> DigitsResNet:
    """On the train split only (the val split is never seen), with random 1-pixel shifts."""
    return fit_fresh(DigitsResNet, data.x_train, data.y_train, epochs, seed, batch_size, augment=_shift)


def held_out(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """val + test: the held-out images a bundled teacher's accuracy is measured on."""
    return np.concatenate([data.x_val, data.x_test]), np.concatenate([data.y_val, data.y_test])


def stamp(exported: onnx.ModelProto, producer: str, doc: str, preprocess: Preprocess, dataset: str,
          val_accuracy: float) -> onnx.ModelProto:
    """Name an exported teacher and write how to feed it and how good it is into its metadata;
    the full ONNX check runs last."""
    exported.producer_name = producer
    exported.doc_string = doc
    preprocess.write_to(exported)
    set_metadata(exported, DATASET_KEY, dataset)
    set_metadata(exported, ACCURACY_KEY, f"{val_accuracy:.6f}")
    onnx.checker.check_model(exported, full_check=True)
    return exported


def teacher_parser(description: str, output: Path, epochs: int, teacher_per_class: int,
                   force_help: str) -> argparse.ArgumentParser:
    """The options every rendered-task teacher script takes; each adds its own after these."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-o", "--output", type=Path, default=output)
    parser.add_argument("--force", action="store_true", help=force_help)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--teacher-per-class", type=int, default=teacher_per_class)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; small convs gain little from more, and lose a lot on a shared machine")
    return parser


@dataclass(frozen=True)
class TeacherBuild:
    """What building a rendered-task teacher measured, for its script to report."""

    parameters: int
    val_accuracy: float
    """On the pruning dataset's val + test images."""
    seconds: float
    cpu_seconds: float
    render_seconds: float


def build_teacher(render: Callable[[], tuple[np.ndarray, np.ndarray]], preprocess: Preprocess,
                  make_net: Callable[[], nn.Module], epochs: int, seed: int, data: Dataset,
                  export: Callable[[nn.Module, float], onnx.ModelProto], output: Path,
                  min_accuracy: float) -> TeacherBuild:
    """Render the teacher's own (plentiful) images, train a fresh net on them, measure it on
    `data`'s held-out images and save it to `output`; below `min_accuracy` nothing is saved
    (SystemExit, as the scripts that call this are the teachers' builders)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    images, labels = render()
    x = preprocess.apply(images)
    rendered = time.perf_counter() - start
    model = fit_fresh(make_net, x, labels, epochs, seed)
    val_accuracy = accuracy(model, *held_out(data))
    if val_accuracy < min_accuracy:
        raise SystemExit(f"validation accuracy {val_accuracy:.4f} is below {min_accuracy}; not saving")
    save_model(export(model, val_accuracy), output)
    parameters = sum(p.numel() for p in model.parameters())
    return TeacherBuild(parameters, val_accuracy, time.perf_counter() - start, time.process_time() - cpu_start, rendered)


def export(model: nn.Module, val_accuracy: float) -> onnx.ModelProto:
    """Legacy exporter, eval mode, dynamic batch; metadata says how to feed it and how good it is."""
    buffer = io.BytesIO()
    dummy = torch.zeros(1, PREPROCESS.channels, *PREPROCESS.size)
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose; its deprecation is noise
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(), (dummy,), buffer, dynamo=False, opset_version=17,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return stamp(onnx.load_from_string(buffer.getvalue()), "onnxwootz models.teacher",
                 "Small ResNet-style digits classifier: the onnxwootz demo teacher.", PREPROCESS, DIGITS, val_accuracy)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    data = load_dataset(DIGITS, PREPROCESS, NUM_CLASSES)
    model = train(data, epochs=args.epochs, seed=args.seed)
    val_accuracy = accuracy(model, *held_out(data))  # the held-out 20% it was always measured on
    parameters = sum(p.numel() for p in model.parameters())
    if val_accuracy < MIN_ACCURACY:
        raise SystemExit(f"validation accuracy {val_accuracy:.4f} is below {MIN_ACCURACY}; not saving")
    save_model(export(model, val_accuracy), args.output)
    print(f"{parameters} parameters, validation accuracy {val_accuracy:.4f} -> {args.output}")


if __name__ == "__main__":
    main()
