"""The symbols benchmark teacher: a MobileNetV2-style CNN (inverted residuals: 1x1 expansion,
3x3 depthwise conv, squeeze-excitation gate, linear 1x1 projection) trained on plenty of
rendered symbols, exported with the legacy exporter in eval mode (BatchNorm folded), plus the
pruning dataset it is judged on (benchmarks.tasks.symbols).

    python -m models.symbols_teacher [-o bench-results/symbols_teacher.onnx] [--force]

Writes the teacher (cached: rebuilt only with --force or when missing) and the pruning dataset
`symbols.npz` beside it (rebuilt when missing)."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from benchmarks.tasks.symbols import CHANNELS, CLASSES, DATASET_NAME, DEFAULT_SIZE, make_pruning_dataset, render_symbols
from models.builders import SqueezeExcite, _Classifier, _conv_bn
from models.export import export_legacy
from models.teacher import build_teacher, stamp, teacher_parser
from onnxwootz.data import load_dataset
from onnxwootz.preprocess import Preprocess

PREPROCESS = Preprocess(size=(DEFAULT_SIZE, DEFAULT_SIZE), channels=CHANNELS, scale=1 / 255,
                        mean=(0.5,) * CHANNELS, std=(0.5,) * CHANNELS)
STEM = 16
STEM_STRIDE = 2
"""The stem halves the 32x32 input at once: the blocks then cost a quarter, which keeps the
teacher's training within minutes of one core."""
BLOCKS = ((24, 1), (32, 2), (32, 1), (48, 2), (48, 1))
"""(width, stride) per inverted residual: 16x16 -> 8x8 -> 4x4."""
EXPANSION = 4
"""Each block's depthwise channels (what module pruning removes) are 4x its input's, as in
MobileNetV2 (6x): more inner channels than the task needs, the over-parameterized teacher of
the paper's regime."""
HEAD = 96
NUM_CLASSES = len(CLASSES)
TEACHER_SEED = 2000
"""Teacher images come from another seed than the pruning dataset (0) and its pool, so they
never overlap."""
TEACHER_PER_CLASS = 200
PRUNING_SEED, TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS, UNLABELED_PER_CLASS = 0, 8, 40, 40, 100
OUTPUT = Path("bench-results/symbols_teacher.onnx")
DATA_NAME = "symbols.npz"
MIN_ACCURACY = 0.9


class SEInvertedResidual(nn.Module):
    """1x1 expand -> BN -> ReLU6, 3x3 depthwise -> BN -> ReLU6, SE gate, 1x1 project -> BN
    (linear bottleneck), plus the input where the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int = EXPANSION) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.residual = stride == 1 and in_channels == out_channels
        self.body = nn.Sequential(
            _conv_bn(in_channels, hidden, 1, act=nn.ReLU6),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            SqueezeExcite(hidden, max(hidden // 8, 8), linear=False),
            _conv_bn(hidden, out_channels, 1, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def symbols_net(stem: int = STEM, blocks: tuple[tuple[int, int], ...] = BLOCKS, head: int = HEAD,
                num_classes: int = NUM_CLASSES) -> nn.Module:
    """Stem conv, SE inverted residuals, 1x1 head conv, global pool, linear."""
    layers: list[nn.Module] = [_conv_bn(CHANNELS, stem, 3, STEM_STRIDE, act=nn.ReLU6)]
    previous = stem
    for width, stride in blocks:
        layers.append(SEInvertedResidual(previous, width, stride))
        previous = width
    layers.append(_conv_bn(previous, head, 1, act=nn.ReLU6))
    return _Classifier(nn.Sequential(*layers), nn.Linear(head, num_classes))


def export(model: nn.Module, val_accuracy: float) -> onnx.ModelProto:
    """Legacy exporter, eval mode (BatchNorm folded into the convs), dynamic batch, opset 17, metadata."""
    return stamp(export_legacy(model, torch.zeros(1, PREPROCESS.channels, *PREPROCESS.size)),
                 "onnxwootz models.symbols_teacher",
                 f"MobileNetV2-style classifier (depthwise convs, SE gates) of {NUM_CLASSES} rendered "
                 "symbol classes: the symbols benchmark teacher.", PREPROCESS, DATASET_NAME, val_accuracy)


def main(argv: list[str] | None = None) -> None:
    parser = teacher_parser(__doc__.splitlines()[0], OUTPUT, 12, TEACHER_PER_CLASS,
                            "rebuild the teacher and the dataset even when cached")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_path = args.output.with_name(DATA_NAME)
    if args.force or not data_path.exists():
        make_pruning_dataset(data_path, TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS, PRUNING_SEED,
                             n_unlabeled_per_class=UNLABELED_PER_CLASS)
    if not (args.force or not args.output.exists()):
        return
    data = load_dataset(str(data_path), PREPROCESS, NUM_CLASSES)
    built = build_teacher(lambda: render_symbols(args.teacher_per_class, TEACHER_SEED, DEFAULT_SIZE), PREPROCESS,
                          symbols_net, args.epochs, args.seed, data, export, args.output, MIN_ACCURACY)
    print(f"teacher: {built.parameters} parameters, val+test accuracy {built.val_accuracy:.4f}, built in "
          f"{built.seconds:.0f} s wall, {built.cpu_seconds:.0f} s CPU (rendering {built.render_seconds:.0f} s wall) "
          f"-> {args.output}")


if __name__ == "__main__":
    main()
