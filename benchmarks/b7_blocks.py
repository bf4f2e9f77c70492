"""B7: Sequitur tuning blocks vs one block per unit, on a subspace whose configurations share runs.

The paper measures Sequitur-chosen blocks 1.08-1.12x faster (geometric mean) than one block per
module. That needs a promising subspace like the one pruning-rate search tools produce, whose
configurations share runs of rates: on the spread sampler's subspaces Sequitur finds no
multi-unit block, so the two strategies coincide. Here the subspace comes from the profile
sampler (onnxwootz.sampling, around the teacher's per-unit sensitivity measured once on the
validation images) and is written once as CONFIGS.json. For each seed, `onnxwootz.prune` runs the
method on it twice, blocks="sequitur" and blocks="per-unit", each in a fresh run directory, with
the same seed, candidates, fine-tuning budget and images; which strategy runs first alternates
from seed to seed, so drift in a shared machine's load does not favour one. Wall time is
time.perf_counter() around each whole call (teacher loading included). Per seed and as median
[min, max]: wall seconds, blocks trained, candidates tried, answer params, fine-tuning steps,
and the ratio per-unit / sequitur of the wall times (> 1: Sequitur's blocks are faster); the
JSON adds each run's own wall and pre-training seconds and median accuracy right after assembly.

    python -m benchmarks.b7_blocks [--task digits|glyphs] [--seeds 0,1,2] [--candidates 16]
        [--alpha 1] [--finetune-steps 900] [--subspace-seed 0]

The glyphs teacher and dataset are built by `models.glyphs_teacher` when missing (as in B3).
Writes bench-results/b7.json (bench-results/b7-glyphs.json for the glyphs task)."""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxwootz
from benchmarks.b3_exploration import PAPER_FINETUNE_STEPS, RESULTS, task_inputs
from onnxwootz.core.atomic import write_json
from onnxwootz.runtime.devices import resolve_device
from onnxwootz.sampling import subspace
from onnxwootz.spec import Spec
from onnxwootz.tuning_blocks import STRATEGIES, identify_blocks

FIGURES = ("wall_seconds", "blocks_trained", "candidates_tried", "params", "finetune_steps")


def run_strategy(teacher: str, data: str, configs: Path, strategy: str, seed: int, alpha: float,
                 finetune_steps: int, root: Path) -> dict[str, Any]:
    """One whole `prune` call, timed from outside."""
    started = time.perf_counter()
    result = onnxwootz.prune(teacher, data=data, run_dir=root / f"{strategy}-{seed}", fresh=True, configs=str(configs),
                             blocks=strategy, seed=seed, constraint=f"accuracy >= teacher - {alpha:g}",
                             finetune_steps=finetune_steps)
    wall = time.perf_counter() - started
    at_assembly = [trial.accuracy_at_assembly for trial in result.trials]
    return {"strategy": strategy, "wall_seconds": wall, "run_wall_seconds": result.wall_seconds,
            "pretrain_seconds": result.pretrain_seconds, "blocks": result.blocks,
            "blocks_trained": result.blocks_trained, "candidates": result.candidates,
            "candidates_tried": result.candidates_tried, "params": result.params, "accuracy": result.accuracy,
            "teacher_accuracy": result.teacher_accuracy, "teacher_params": result.teacher_params,
            "bound": result.bound, "finetune_steps": sum(trial.steps for trial in result.trials),
            "median_accuracy_at_assembly": statistics.median(at_assembly) if at_assembly else None}


def block_summary(configs: list[list[float]], units: list[str]) -> dict[str, Any]:
    """What each strategy identifies on the subspace, before any training."""
    summary = {}
    for strategy in STRATEGIES:
        block_set = identify_blocks(configs, units, strategy)
        lengths = [len(block.rates) for block in block_set.blocks]
        summary[strategy] = {"blocks": len(lengths), "multi_unit_blocks": sum(n >= 2 for n in lengths),
                             "longest": max(lengths, default=0),
                             "multi_unit": [block.symbols for block in block_set.blocks if len(block.rates) >= 2]}
    return summary


def median_range(values: list[float | None]) -> dict[str, float | None]:
    """Median and range; None when any run found no answer."""
    if not values or any(v is None for v in values):
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


HEADER = ("| seed | wall s S / P | blocks trained S / P | tried S / P | answer params S / P | fine-tune steps S / P "
          "| P/S wall |")


def row_line(row: dict[str, Any]) -> str:
    """One seed's table row: S = sequitur, P = per-unit."""
    def pair(figure: str, digits: int = 0) -> str:
        return " / ".join("none" if row[s][figure] is None else f"{row[s][figure]:.{digits}f}" for s in STRATEGIES)

    return (f"| {row['seed']} | {pair('wall_seconds', 1)} | {pair('blocks_trained')} | {pair('candidates_tried')} "
            f"| {pair('params')} | {pair('finetune_steps')} | {row['ratio']:.2f}x |")


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [HEADER, "|---|---|---|---|---|---|---|", *map(row_line, rows)]

    def ranged(figure: str, strategy: str | None, digits: int) -> str:
        stats = summary[strategy][figure] if strategy else summary[figure]
        if stats["median"] is None:
            return "none"
        return f"{stats['median']:.{digits}f} [{stats['min']:.{digits}f}, {stats['max']:.{digits}f}]"

    lines.append("| median [min, max] | " + " | ".join(
        f"{ranged(figure, 'sequitur', 1 if figure == 'wall_seconds' else 0)} / "
        f"{ranged(figure, 'per-unit', 1 if figure == 'wall_seconds' else 0)}" for figure in FIGURES)
        + f" | {ranged('ratio', None, 2)} |")
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {strategy: {figure: median_range([row[strategy][figure] for row in rows])
                                          for figure in FIGURES} for strategy in STRATEGIES}
    summary["ratio"] = median_range([row["ratio"] for row in rows])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits", choices=("digits", "glyphs"))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--candidates", type=int, default=16, help="size of the profile subspace")
    parser.add_argument("--alpha", type=float, default=1.0, help="accuracy drop allowed, in points")
    parser.add_argument("--finetune-steps", type=int, default=PAPER_FINETUNE_STEPS,
                        help="fine-tuning budget per candidate, both strategies "
                        f"(default as B3: {PAPER_FINETUNE_STEPS})")
    parser.add_argument("--subspace-seed", type=int, default=0, help="seed of the profile sampler")
    options = parser.parse_args()
    seeds = [int(s) for s in options.seeds.split(",") if s.strip()]
    teacher, data = task_inputs(options.task)
    rates = Spec().rates
    RESULTS.mkdir(exist_ok=True)
    stem = "b7" if options.task == "digits" else f"b7-{options.task}"
    configs_path = RESULTS / f"{stem}-configs.json"
    sampled = subspace(teacher, options.candidates, rates, options.subspace_seed, configs_path, sampler="profile",
                       data=data)
    configs = [c.rates for c in sampled.configurations]
    identified = block_summary(configs, sampled.units)
    print(f"profile subspace: {len(configs)} configurations over {len(sampled.units)} units; Sequitur "
          f"{identified['sequitur']['blocks']} blocks ({identified['sequitur']['multi_unit_blocks']} multi-unit), "
          f"per-unit {identified['per-unit']['blocks']}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="b7-") as tmp:
        for number, seed in enumerate(seeds):
            order = STRATEGIES if number % 2 == 0 else STRATEGIES[::-1]
            row: dict[str, Any] = {"seed": seed, "order": list(order)}
            for strategy in order:
                row[strategy] = run_strategy(teacher, data, configs_path, strategy, seed, options.alpha / 100,
                                             options.finetune_steps, Path(tmp))
            row["ratio"] = row["per-unit"]["wall_seconds"] / max(row["sequitur"]["wall_seconds"], 1e-9)
            rows.append(row)
            print(row_line(row), flush=True)
    summary = summarize(rows)
    table = markdown(rows, summary)
    print("\n" + table)
    path = RESULTS / f"{stem}.json"
    write_json(path, {
        "benchmark": "B7", "task": options.task, "teacher": teacher, "seeds": seeds, "candidates": len(configs),
        "alpha": options.alpha / 100, "finetune_steps": options.finetune_steps, "rates": rates,
        "subspace": {"sampler": "profile", "seed": options.subspace_seed, "configs": str(configs_path),
                     "configurations": configs, "sensitivity": sampled.sensitivity.to_dict(),
                     "identified": identified},
        "machine": {"python": platform.python_version(), "cpu": platform.processor(),
                    "device": str(resolve_device(Spec().device))},
        "rows": rows, "summary": summary, "table": table})
    print(f"wrote {path} and {configs_path}")


if __name__ == "__main__":
    main()
