"""B8: coverage. The MACs ratio `apply` reaches at uniform 0.5 on every CNN family of
Torch-Pruning's own torchvision test (smallest variant each, classification and segmentation)
and on ultralytics' YOLOv8n and YOLO11n detectors, side by side with Torch-Pruning at the same
setting.

Each architecture is built by torchvision (or by ultralytics from its yaml, offline, its
first output, the decoded boxes and scores, exported) with seeded random weights and exported (the legacy
exporter at opset 17 by default, or the dynamo one; batch axis dynamic). onnxwootz prunes the
ONNX file: `apply(rate=0.5, granularity="group")`, which checks the result against the masked
original (`verified`). The written PLAN.json is then checked on its own: its slices, read onto
the input model and zeroed, must give what the pruned file gives (`plan_error`: the largest
difference relative to the largest output, on random images). Torch-Pruning prunes the torch module: MetaPruner, L1 magnitude
importance, pruning_ratio 0.5, the classifier (the layers that output the classes) ignored, as
in its test (for a detector, the last conv of every box and class branch, the DFL decoder, and
YOLO11's attention blocks, which its dependency graph cannot take). Its pruned module is exported the same way, and both sides' MACs are counted by the
same counter on the ONNX graphs (conv, gemm and matmul MACs per image), so the ratios compare
like with like. A Torch-Pruning failure (an exception while pruning, or a pruned module that no
longer runs) is recorded with its message.

Needs torchvision, which the project's CPU torch build does not have: run it from an
environment with `pip install torch==2.14.1 torchvision==0.29.1 -e '.[bench]' onnxscript`
(and `ultralytics` for the detectors; without it they are skipped).
Finished architectures are kept in the output file and skipped on a re-run.

Run: `python -m benchmarks.b8_coverage [--exporter legacy|dynamo] [--only resnext50_32x4d ...]
[--out bench-results/b8.json]`."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import multiprocessing
import os
import platform
import queue
import tempfile
import time
import types
from pathlib import Path

import onnx
import torch
from torch import nn

import numpy as np

from models.export import export, export_legacy
from onnxwootz.core.atomic import write_json
from onnxwootz.core.onnx_helpers import dummy_feed
from onnxwootz.passes.mask import ZeroRemoved
from onnxwootz.passes.plan import plan_slices
from onnxwootz.prepared import prepare
from onnxwootz.pruning import apply
from onnxwootz.runtime.sessions import cpu_session

RESULT = Path("bench-results") / "b8.json"
RATE = 0.5


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    size: int = 224
    segmentation: bool = False
    kwargs: tuple[tuple[str, object], ...] = ()
    source: str = "torchvision"  # or "ultralytics": built from its yaml


ARCHITECTURES = [
    Architecture("alexnet"), Architecture("vgg11"), Architecture("resnet18"), Architecture("resnext50_32x4d"),
    Architecture("wide_resnet50_2"), Architecture("regnet_x_400mf"), Architecture("regnet_y_400mf"),
    Architecture("squeezenet1_0"), Architecture("densenet121"),
    Architecture("googlenet", kwargs=(("aux_logits", False), ("init_weights", True))),
    Architecture("inception_v3", size=299, kwargs=(("aux_logits", False), ("init_weights", True))),
    Architecture("mnasnet0_5"), Architecture("mobilenet_v2"), Architecture("mobilenet_v3_small"),
    Architecture("efficientnet_b0"), Architecture("efficientnet_v2_s"), Architecture("shufflenet_v2_x0_5"),
    Architecture("convnext_tiny", kwargs=(("layer_scale", 0.5),)),  # its 1e-6 default hides the blocks
    Architecture("fcn_resnet50", segmentation=True),
    Architecture("deeplabv3_mobilenet_v3_large", segmentation=True),
    Architecture("lraspp_mobilenet_v3_large", segmentation=True),
    Architecture("yolov8n", size=640, source="ultralytics"), Architecture("yolo11n", size=640, source="ultralytics"),
]
CLASSES = {False: 1000, True: 21}


class _SegmentationOut(nn.Module):
    """torchvision's segmentation models return {'out': ...}: the exporters want a tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


class _FirstOutput(nn.Module):
    """An ultralytics detector in eval mode returns (decoded predictions, raw head maps): the
    first is what a deployed export gives."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def build(arch: Architecture) -> nn.Module:
    torch.manual_seed(0)
    if arch.source == "ultralytics":
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        return _FirstOutput(YOLO(f"{arch.name}.yaml").model).eval()
    import torchvision

    kwargs = dict(arch.kwargs)
    if arch.segmentation:
        kwargs.update(weights_backbone=None, aux_loss=False)
    model = torchvision.models.get_model(arch.name, weights=None, num_classes=CLASSES[arch.segmentation], **kwargs)
    return (_SegmentationOut(model) if arch.segmentation else model).eval()


def _macs(path: Path) -> int:
    return prepare(path).macs


def plan_error(source: Path, pruned: Path, plan: Path) -> float:
    """How far the input model with PLAN.json's slices zeroed is from the pruned file."""
    prepared = prepare(source)
    masked = prepared.model
    ZeroRemoved(plan_slices(masked, json.loads(plan.read_text())["slices"]))(masked)
    feed = dummy_feed(masked, prepared.feed_shapes, seed=7)
    expected = cpu_session(masked).run(None, feed)
    actual = cpu_session(prepare(pruned).model).run(None, feed)
    return max(float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-12)) for a, e in zip(actual, expected))


def _output_layers(model: nn.Module, arch: Architecture) -> list[nn.Module]:
    """The layers Torch-Pruning leaves whole: those that output the classes, or a detector's
    box and class branches' last convs and its DFL decoder, and YOLO11's C2PSA attention
    blocks (its dependency graph grew past 15 GB in six minutes on them; left whole, it prunes
    the rest)."""
    if arch.source != "ultralytics":
        return _classifier_layers(model, CLASSES[arch.segmentation])
    from ultralytics.nn.modules.block import C2PSA

    head = model.model.model[-1]
    return [*(branch[-1] for branch in (*head.cv2, *head.cv3)), head.dfl,
            *(module for module in model.modules() if isinstance(module, C2PSA))]


def _classifier_layers(model: nn.Module, classes: int) -> list[nn.Module]:
    return [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == classes)]


def _halves(block: nn.Module, half: int) -> tuple[nn.Module, nn.Module]:
    """Two copies of an ultralytics Conv (conv, BatchNorm, activation) that compute its first
    and its second `half` output channels."""
    parts = (copy.deepcopy(block), copy.deepcopy(block))
    for part, rows in zip(parts, (slice(0, half), slice(half, 2 * half))):
        part.conv.weight = nn.Parameter(part.conv.weight.data[rows].clone())
        part.conv.out_channels = half
        for name in ("weight", "bias"):
            setattr(part.bn, name, nn.Parameter(getattr(part.bn, name).data[rows].clone()))
        for name in ("running_mean", "running_var"):
            setattr(part.bn, name, getattr(part.bn, name)[rows].clone())
        part.bn.num_features = half
    return parts


def _c2f_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = [self.cv1_first(x), self.cv1_second(x)]
    y.extend(block(y[-1]) for block in self.m)
    return self.cv2(torch.cat(y, 1))


def _c2psa_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.cv2(torch.cat((self.cv1_first(x), self.m(self.cv1_second(x))), 1))


def split_chunked_convs(model: nn.Module) -> nn.Module:
    """Torch-Pruning's recipe for ultralytics detectors (its YOLOv8 example does the same): a
    C2f (and C3k2) chunks one conv's output in two, and C2PSA splits it, which its dependency
    graph cannot follow; the conv becomes two that compute the two halves. Same function and
    MACs; in place."""
    from ultralytics.nn.modules.block import C2PSA, C2f

    for module in model.modules():
        forward = _c2f_forward if isinstance(module, C2f) else _c2psa_forward if isinstance(module, C2PSA) else None
        if forward is not None:
            module.cv1_first, module.cv1_second = _halves(module.cv1, module.c)
            del module.cv1
            module.forward = types.MethodType(forward, module)
    return model


def torch_pruning(model: nn.Module, arch: Architecture, work: Path) -> dict[str, object]:
    """Torch-Pruning at the same setting; its pruned module exported and counted like ours."""
    import torch_pruning as tp

    example = torch.zeros(1, 3, arch.size, arch.size)
    if arch.source == "ultralytics":
        split_chunked_convs(model)
    start = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=RATE,
                                      ignored_layers=_output_layers(model, arch))
        pruner.step()
        with torch.no_grad():
            model(example)
    except Exception as error:  # a failure is a result here: recorded, not raised
        return {"failed": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]}
    seconds = time.perf_counter() - start
    path = work / "tp.onnx"
    export_legacy(model, example, path)
    return {"macs_after": _macs(path), "seconds": seconds}


TORCH_PRUNING_SECONDS = 900
TORCH_PRUNING_BYTES = 8 << 30


def torch_pruning_bounded(arch: Architecture, work: Path) -> dict[str, object]:
    """torch_pruning of a fresh build (seeded: the same weights) in a child process, ended when it runs past TORCH_PRUNING_SECONDS or its
    memory past TORCH_PRUNING_BYTES (its dependency graph grew past 15 GB in six minutes on
    YOLO11n's attention block): such a run is a failure recorded with why, not a machine
    brought down. The child is spawned, not forked: a fork of a process whose torch thread
    pool has run can hang in its first parallel op."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_torch_pruning_child, args=(arch, work, results, torch.get_num_threads()))
    child.start()
    start = time.perf_counter()
    try:
        while True:
            try:
                return results.get(timeout=1.0)
            except queue.Empty:
                pass
            if not child.is_alive():
                return {"failed": f"the Torch-Pruning process ended with code {child.exitcode}"}
            if _resident_bytes(child.pid) > TORCH_PRUNING_BYTES:
                return {"failed": f"Torch-Pruning's process grew past {TORCH_PRUNING_BYTES >> 30} GB (ended)"}
            if time.perf_counter() - start > TORCH_PRUNING_SECONDS:
                return {"failed": f"Torch-Pruning did not finish in {TORCH_PRUNING_SECONDS} s (ended)"}
    finally:
        child.kill()
        child.join()


def _torch_pruning_child(arch: Architecture, work: Path, results: "multiprocessing.Queue", threads: int) -> None:
    torch.set_num_threads(threads)
    results.put(torch_pruning(build(arch), arch, work))


def _resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(arch: Architecture, exporter: str) -> dict[str, object]:
    model = build(arch)
    example = torch.zeros(1, 3, arch.size, arch.size)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source, pruned, plan = work / f"{arch.name}.onnx", work / "pruned.onnx", work / "plan.json"
        export(model, example, exporter, source)
        start = time.perf_counter()
        try:
            ours = apply(source, rate=RATE, granularity="group", output=pruned, plan=plan)
        except Exception as error:  # recorded like Torch-Pruning's, so one model cannot stop the rest
            wootz: dict[str, object] = {"failed": f"{type(error).__name__}: {error}"[:300]}
        else:
            wootz = {"macs_before": ours.macs_before, "macs_after": ours.macs_after,
                     "params_before": ours.params_before, "params_after": ours.params_after,
                     "verified": ours.verified, "verification": ours.verification,
                     "seconds": time.perf_counter() - start, "plan_error": plan_error(source, pruned, plan)}
        tp_result = torch_pruning_bounded(arch, work)
        macs_before = wootz.get("macs_before") or _macs(source)
    for side in (wootz, tp_result):
        if "macs_after" in side:
            side["macs_ratio"] = macs_before / side["macs_after"]
    return {"architecture": arch.name, "exporter": exporter, "input": [1, 3, arch.size, arch.size], "onnxwootz": wootz,
            "torch_pruning": tp_result}


def table(results: dict[str, dict]) -> str:
    def cell(side: dict) -> str:
        return f"{side['macs_ratio']:.2f}x" if "macs_ratio" in side else f"fails ({side.get('failed', '?')[:60]})"

    rows = ["| architecture | exporter | onnxwootz MACs ratio | checked by | PLAN.json error | Torch-Pruning MACs ratio |",
            "|---|---|---|---|---|---|"]
    for result in results.values():
        ours, theirs = result["onnxwootz"], result["torch_pruning"]
        error = f"{ours['plan_error']:.0e}" if "plan_error" in ours else "-"
        rows.append(f"| {result['architecture']} | {result['exporter']} | {cell(ours)} | {ours.get('verified') or '-'} "
                    f"| {error} | {cell(theirs)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="architecture names (default: all)")
    parser.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import torch_pruning
    import torchvision

    done = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict[str, dict] = done.get("results", {})
    for arch in ARCHITECTURES:
        key = f"{arch.name}@{args.exporter}"
        if (args.only and arch.name not in args.only) or key in results:
            continue
        if importlib.util.find_spec(arch.source) is None:
            print(f"{arch.name}: skipped, {arch.source} is not installed", flush=True)
            continue
        results[key] = measure(arch, args.exporter)
        write_json(args.out, {
            "benchmark": "B8", "rate": RATE, "granularity": "group",
            "device": f"cpu ({platform.processor() or platform.machine()})", "date": time.strftime("%Y-%m-%d"),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_pruning": torch_pruning.__version__, "onnx": onnx.__version__, "results": results,
        })
        print(table({key: results[key]}).splitlines()[-1], flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
