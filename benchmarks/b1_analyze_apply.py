"""B1: `apply` (load, canonicalize, analyze, prune, check, save) on a ResNet-50 sized graph,
side by side with (A) loading and saving the same file alone, (C) Torch-Pruning building its
dependency graph and pruning the same architecture in torch, and (D) the same and exporting the
pruned module to ONNX, which is what Torch-Pruning needs to give what `apply` gives: a pruned
ONNX file (BENCHMARKS.md's comparison). Both C and D are reported, so the export's share shows.
With `--processes N`, the same jobs also run as whole processes, N rounds: `onnxwootz apply`
against a Python process that imports Torch-Pruning, builds the module, prunes and exports it
(and one that loads and saves the file), interpreter start and imports included.

The torchvision-sized ResNet-50 builder (25.6M params) is exported once with the legacy
exporter at 1x3x224x224 into a temporary folder. Each round runs the contestants in a rotating
order (so drift hits all alike) after one warm-up round; the figures are the medians of the
per-round ratios apply/load+save (target <= 1.5) and apply/Torch-Pruning (target <= 0.5; with and
without the export, the legacy exporter at opset 17 as for the source file). All run
at uniform rate 0.5: `apply --granularity group`, and Torch-Pruning's MetaPruner with L1
magnitude importance and pruning_ratio 0.5 (the classifier left whole, as `apply` does).

Run: `python -m benchmarks.b1_analyze_apply [--pairs 5] [--threads 2] [--processes 3]`."""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import onnx
import torch

from models import builders
from models.export import export_legacy
from onnxwootz.pruning import apply

RESULT = Path("bench-results") / "b1.json"
SHAPE = (1, 3, 224, 224)


def load_save(source: Path, target: Path) -> None:
    onnx.save_model(onnx.load(str(source)), str(target))


def wootz_apply(source: Path, target: Path) -> dict[str, int]:
    result = apply(source, rate=0.5, granularity="group", output=target)
    return {"params_before": result.params_before, "params_after": result.params_after,
            "macs_before": result.macs_before, "macs_after": result.macs_after}


def torch_pruning_available() -> str | None:
    """The installed Torch-Pruning version, or None."""
    try:
        import torch_pruning
    except ImportError:
        return None
    return getattr(torch_pruning, "__version__", "unknown")


def torch_prune_export(model: torch.nn.Module, target: Path) -> dict[str, int]:
    """torch_prune, then the pruned module exported as the source file was."""
    counts = torch_prune(model)
    export_legacy(model, torch.zeros(SHAPE), target)
    return counts


def torch_prune(model: torch.nn.Module) -> dict[str, int]:
    """Dependency graph + one pruning step, in place (the module is a fresh copy each time)."""
    import torch_pruning as tp

    example = torch.zeros(SHAPE)
    before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
        ignored_layers=[model.fc],
    )
    pruner.step()
    return {"params_before": before, "params_after": sum(p.numel() for p in model.parameters())}


TORCH_PRUNING_PROCESS = """
import sys, torch
import torch_pruning as tp
from models import builders
from models.export import export_legacy
torch.set_num_threads(int(sys.argv[2]))
model = builders.resnet50().eval()
example = torch.zeros({shape})
pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                              pruning_ratio=0.5, ignored_layers=[model.fc])
pruner.step()
export_legacy(model, example, sys.argv[1])
""".format(shape=SHAPE)
"""The whole job as Torch-Pruning's user runs it: import, build, prune, export."""


def processes(source: Path, work: Path, rounds: int, threads: int) -> dict[str, list[float]]:
    """Whole-process seconds per contestant, `rounds` rounds in rotating order after a warm-up."""
    cli = Path(sys.executable).parent / "onnxwootz"
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    commands = {
        "load_save_process": [sys.executable, "-c", "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])",
                              str(source), str(work / "copy.onnx")],
        "apply_process": [str(cli), "apply", str(source), "--rate", "0.5", "-g", "group", "-o", str(work / "p.onnx")],
    }
    if torch_pruning_available() is not None:
        commands["torch_pruning_export_process"] = [sys.executable, "-c", TORCH_PRUNING_PROCESS, str(work / "tp.onnx"),
                                                    str(threads)]
    times, _ = _rounds({name: functools.partial(subprocess.run, command, check=True, capture_output=True,
                                                env=environment) for name, command in commands.items()}, rounds)
    return times


def _rounds(contestants: dict[str, Callable[[], object]], rounds: int,
            prepare: Callable[[str], None] = lambda name: None) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds per contestant over `rounds` rounds after a warm-up round, each round in a rotated
    order (so drift hits all alike); `prepare(name)` runs untimed before each call. Also the
    last dict each contestant returned (its figures)."""
    names = list(contestants)
    times: dict[str, list[float]] = {name: [] for name in names}
    details: dict[str, object] = {}
    for round_number in range(rounds + 1):  # round 0 is the warm-up
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            prepare(name)
            seconds, value = _timed(contestants[name])
            if round_number:
                times[name].append(seconds)
            if isinstance(value, dict):
                details[name] = value
    return times, details


def _timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def run(pairs: int, threads: int, process_rounds: int = 0) -> dict[str, object]:
    torch.set_num_threads(threads)
    tp_version = torch_pruning_available()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = work / "resnet50.onnx"
        module = builders.resnet50().eval()
        export_legacy(module, torch.zeros(SHAPE), source)
        contestants: dict[str, Callable[[], object]] = {
            "load_save": lambda: load_save(source, work / "copy.onnx"),
            "apply": lambda: wootz_apply(source, work / "pruned.onnx"),
        }
        fresh: list[torch.nn.Module] = []
        if tp_version is not None:

            def torch_pruning_step() -> dict[str, int]:
                return torch_prune(fresh.pop())

            contestants["torch_pruning"] = torch_pruning_step
            contestants["torch_pruning_export"] = lambda: torch_prune_export(fresh.pop(), work / "tp.onnx")

        def copy_for_torch_pruning(name: str) -> None:
            if name.startswith("torch_pruning"):
                fresh.append(copy.deepcopy(module))  # copying is not timed

        times, details = _rounds(contestants, pairs, copy_for_torch_pruning)
        if process_rounds:
            times.update(processes(source, work, process_rounds, threads))
        size = source.stat().st_size
    ratios = {"apply_over_load_save": [a / b for a, b in zip(times["apply"], times["load_save"])]}
    if "torch_pruning" in times:
        ratios["apply_over_torch_pruning"] = [a / b for a, b in zip(times["apply"], times["torch_pruning"])]
        ratios["apply_over_torch_pruning_export"] = [a / b for a, b in zip(times["apply"],
                                                                           times["torch_pruning_export"])]
    if "apply_process" in times:
        ratios["apply_over_load_save_process"] = [a / b for a, b in zip(times["apply_process"],
                                                                        times["load_save_process"])]
    if "torch_pruning_export_process" in times:
        ratios["apply_over_torch_pruning_export_process"] = [
            a / b for a, b in zip(times["apply_process"], times["torch_pruning_export_process"])]
    return {
        "benchmark": "B1",
        "what": "apply (uniform 0.5, group granularity) on the full-size ResNet-50 legacy export",
        "model_bytes": size,
        "pairs": pairs,
        "threads": threads,
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "seconds_median": {name: statistics.median(values) for name, values in times.items()},
        "ratio_median": {name: statistics.median(values) for name, values in ratios.items()},
        "ratios": ratios,
        "targets": {"apply_over_load_save": 1.5, "apply_over_torch_pruning": 0.5,
                    "apply_over_torch_pruning_export": 0.5, "apply_over_load_save_process": 1.5,
                    "apply_over_torch_pruning_export_process": 0.5},
        "torch_pruning": tp_version,
        "results": details,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=0, help="rounds of whole-process timings (0: none)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    result = run(args.pairs, args.threads, args.processes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    seconds, ratio = result["seconds_median"], result["ratio_median"]
    rows = [("device", result["device"]), ("threads", result["threads"]), ("pairs", result["pairs"]),
            ("model file (MB)", f"{result['model_bytes'] / 1e6:.1f}")]
    rows += [(f"{name} (s, median; not comparable across machines)", f"{value:.2f}")
             for name, value in seconds.items()]
    rows += [(f"{name} (median of rounds; target <= {result['targets'][name]})", f"{value:.2f}")
             for name, value in ratio.items()]
    if result["torch_pruning"] is None:
        rows.append(("Torch-Pruning", "not installed: `pip install --no-deps torch-pruning`"))
    for name, details in result["results"].items():
        if "params_after" in details:
            rows.append((f"{name} params", f"{details['params_before']:,} -> {details['params_after']:,}"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
