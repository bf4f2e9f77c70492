"""B5: training-step time of the torch view of an exported graph vs the hand-written module.

A small ResNet-style CNN (BatchNorm kept, so both sides train the same architecture) is
exported with the legacy exporter and viewed with `TorchGraph`; one step is forward, backward
and an SGD update on a batch of 32 32x32 images. The two step alternately (A, B) after a
warm-up; the figure is the median of the per-pair ratios view/hand. Target: <= 1.10.

Run: `python -m benchmarks.b5_torch_view [--pairs 60] [--threads 1] [--device auto]`."""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from models.builders import randomize_bn
from onnxwootz.runtime import TorchGraph
from onnxwootz.runtime.devices import resolve_device

BATCH, SIZE, CLASSES = 32, 32, 10
RESULT = Path("bench-results") / "b5_torch_view.json"


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class SmallResNet(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layers = nn.Sequential(
            Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2), Block(4 * width, 4 * width, 1)
        )
        self.fc = nn.Linear(4 * width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(torch.mean(x, dim=(2, 3)), 1))


def export_with_batchnorm(module: nn.Module) -> onnx.ModelProto:
    """Legacy export that keeps BatchNorm nodes (no eval-mode folding), dynamic batch."""
    buffer = io.BytesIO()
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            module, (torch.randn(1, 3, SIZE, SIZE),), buffer, dynamo=False, opset_version=17,
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
            input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return onnx.load_from_string(buffer.getvalue())


def _step(module: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(module(x), y)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(pairs: int, threads: int, device_name: str, warmup: int = 5) -> dict[str, object]:
    torch.set_num_threads(threads)
    device = resolve_device(device_name)
    torch.manual_seed(0)
    # distinct BatchNorm values: fresh ones (all 1/0) get merged into shared initializers by the exporter
    hand = randomize_bn(SmallResNet())
    model = export_with_batchnorm(hand)
    ops = sorted({node.op_type for node in model.graph.node})
    view = TorchGraph(model).to(device).train()
    hand = hand.to(device).train()
    opt_hand = torch.optim.SGD(hand.parameters(), lr=0.01, momentum=0.9)
    opt_view = torch.optim.SGD(view.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)
    for _ in range(warmup):
        _step(hand, opt_hand, x, y, device)
        _step(view, opt_view, x, y, device)
    hand_times, view_times, ratios = [], [], []
    for index in range(pairs):
        if index % 2 == 0:  # alternate which side goes first, so drift hits both alike
            a = _step(hand, opt_hand, x, y, device)
            b = _step(view, opt_view, x, y, device)
        else:
            b = _step(view, opt_view, x, y, device)
            a = _step(hand, opt_hand, x, y, device)
        hand_times.append(a)
        view_times.append(b)
        ratios.append(b / a)
    return {
        "benchmark": "B5",
        "what": "training step (forward+backward+SGD) of TorchGraph(legacy export) vs the hand-written module",
        "ratio_median": statistics.median(ratios),
        "ratio_quartiles": statistics.quantiles(ratios, n=4),
        "target": 1.10,
        "pairs": pairs,
        "threads": threads,
        "batch": BATCH,
        "input": [3, SIZE, SIZE],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "hand_step_ms_median": 1000 * statistics.median(hand_times),
        "view_step_ms_median": 1000 * statistics.median(view_times),
        "graph_ops": ops,
        "parameters": sum(p.numel() for p in view.parameters()),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="1 by default: oversubscribed shared cores make 2+ threads noisy")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    result = run(args.pairs, args.threads, args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        ("device", result["device"]), ("threads", result["threads"]), ("pairs", result["pairs"]),
        ("hand-written step (ms, median)", f"{result['hand_step_ms_median']:.2f}"),
        ("TorchGraph step (ms, median)", f"{result['view_step_ms_median']:.2f}"),
        ("ratio view/hand (median of pairs)", f"{result['ratio_median']:.3f}"),
        ("ratio quartiles", ", ".join(f"{q:.3f}" for q in result["ratio_quartiles"])),
        ("target", "<= 1.10"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"B5 torch view training step ({args.out})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
