"""B4: multiplexed block pre-training (one teacher pass per batch feeds every student) vs the
same blocks pre-trained one after another (one `pretrain_blocks` call per block), same steps,
batches and seed, the teacher recomputed for every batch in both (as the paper does); and,
for reference, multiplexed with the teacher's tensors held for the whole pool (what `prune`
does when they fit in memory), the time to compute them included.

The blocks are the digits teacher's units at every rate (4 units x {0.3, 0.5, 0.7} = 12
students), built exactly as `onnxwootz prune` builds them (L1-pruned teacher weights, the span
sliced out as its own graph). The two modes alternate (A, B) after a warm-up pair; the figure
is the median of the per-pair ratios sequential/multiplexed. Because the students share only
the batches, every block must end with the same loss in both modes. Target: >= 2x.

Run: `python -m benchmarks.b4_multiplexing [--pairs 3] [--steps 100] [--threads 1] [--float32]` (writes
bench-results/b4.json, or b4-float32.json)."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from onnxwootz.data import load_dataset
from onnxwootz.passes.block_slice import slice_span
from onnxwootz.prepared import PreparedModel, prepare
from onnxwootz.preprocess import Preprocess
from onnxwootz.pruning import prune_prepared
from onnxwootz.runtime.devices import native_bf16
from onnxwootz.runtime.torch_graph import TorchGraph
from onnxwootz.runtime.training import TAP_CACHE_BYTES, PretrainConfig, Student, TeacherTaps, pretrain_blocks, tensors

TEACHER = Path("models/digits_resnet.onnx")
RATES = (0.3, 0.5, 0.7)
BATCH, LR, WEIGHT_DECAY, SEED = 32, 3e-3, 1e-4, 0
RESULTS = Path("bench-results")


def students(prepared: PreparedModel) -> list[Student]:
    """One student per (unit, rate): the unit's span of the teacher pruned at that rate."""
    units = prepared.units("module").units
    built = []
    for unit in units:
        for rate in RATES:
            config = {u.name: (rate if u is unit else 0.0) for u in units}
            pruned = prune_prepared(prepared, config, "module")
            view = TorchGraph(slice_span(pruned.model, unit.entries, unit.exits, dict(prepared.shapes)))
            built.append(Student(f"{unit.name}@{rate:g}", view, tuple(unit.entries), tuple(unit.exits)))
    return built


CPU = torch.device("cpu")


def _taps(prepared: PreparedModel, x: torch.Tensor, held: bool, autocast: bool) -> TeacherTaps:
    return TeacherTaps(prepared.model, prepared.units("module").boundaries, x, CPU, autocast=autocast, budget=TAP_CACHE_BYTES if held else 0)


def _config(steps: int, autocast: bool) -> PretrainConfig:
    return PretrainConfig(steps, BATCH, LR, WEIGHT_DECAY, SEED, autocast)


def multiplexed(prepared: PreparedModel, x: torch.Tensor, steps: int, autocast: bool,
                held: bool = False) -> tuple[float, dict[str, float]]:
    group = students(prepared)
    started = time.perf_counter()
    fits = pretrain_blocks(_taps(prepared, x, held, autocast), group, _config(steps, autocast), CPU)
    return time.perf_counter() - started, {key: fit.loss for key, fit in fits.items()}


def sequential(prepared: PreparedModel, x: torch.Tensor, steps: int, autocast: bool) -> tuple[float, dict[str, float]]:
    group = students(prepared)
    started = time.perf_counter()
    taps = _taps(prepared, x, False, autocast)
    losses: dict[str, float] = {}
    for student in group:
        fits = pretrain_blocks(taps, [student], _config(steps, autocast), CPU)
        losses.update({key: fit.loss for key, fit in fits.items()})
    return time.perf_counter() - started, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--float32", action="store_true", help="no bf16 autocast, even where the CPU has it")
    options = parser.parse_args()
    autocast = not options.float32 and native_bf16(CPU)  # as `prune` trains
    torch.set_num_threads(options.threads)
    prepared = prepare(TEACHER)
    dataset = load_dataset("digits", Preprocess.from_model(prepared.model), 10, SEED)
    x, _ = tensors(dataset.x_train, dataset.y_train, torch.device("cpu"))

    multiplexed(prepared, x, max(1, options.steps // 10), autocast)  # warm-up: allocator, kernels
    sequential(prepared, x, max(1, options.steps // 10), autocast)
    pairs = []
    for _ in range(options.pairs):
        a_seconds, a_losses = multiplexed(prepared, x, options.steps, autocast)
        b_seconds, b_losses = sequential(prepared, x, options.steps, autocast)
        held_seconds, _ = multiplexed(prepared, x, options.steps, autocast, held=True)
        pairs.append({"multiplexed_s": a_seconds, "sequential_s": b_seconds, "ratio": b_seconds / a_seconds,
                      "multiplexed_held_s": held_seconds})
    gap = max(abs(a_losses[k] - b_losses[k]) / max(abs(b_losses[k]), 1e-12) for k in a_losses)
    ratio = statistics.median(p["ratio"] for p in pairs)

    print(f"B4: {len(a_losses)} blocks of {TEACHER.name}, {options.steps} steps, batch {BATCH}, "
          f"{options.threads} thread(s), {options.pairs} pairs, {'bf16 autocast' if autocast else 'float32'}")
    print("| block | loss multiplexed | loss sequential |")
    print("|---|---|---|")
    for key in a_losses:
        print(f"| {key} | {a_losses[key]:.6f} | {b_losses[key]:.6f} |")
    print(f"\nwall time sequential / multiplexed: {ratio:.2f}x (median of {len(pairs)} pairs; "
          f"pairs: {', '.join(format(p['ratio'], '.2f') for p in pairs)}); largest relative loss gap {gap:.2e}")
    held = statistics.median(p["multiplexed_held_s"] for p in pairs)
    print(f"multiplexed, teacher recomputed per batch: {statistics.median(p['multiplexed_s'] for p in pairs):.2f} s; "
          f"teacher tensors held (computing them included): {held:.2f} s")
    result = RESULTS / ("b4-float32.json" if options.float32 else "b4.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps({
        "benchmark": "B4", "teacher": str(TEACHER), "blocks": len(a_losses), "steps": options.steps, "batch": BATCH,
        "lr": LR, "seed": SEED, "threads": options.threads, "device": "cpu", "bf16_autocast": autocast,
        "machine": {"python": platform.python_version(), "cpu": platform.processor(), "torch": torch.__version__},
        "pairs": pairs, "ratio_sequential_over_multiplexed": ratio, "target": 2.0,
        "losses": {key: {"multiplexed": a_losses[key], "sequential": b_losses[key]} for key in a_losses},
        "max_relative_loss_gap": gap}, indent=2) + "\n")
    print(f"wrote {result}")


if __name__ == "__main__":
    main()
