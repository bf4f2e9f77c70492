"""B3, second protocol: the method against the paper's baseline and the strongest fair baseline,
at the tool's defaults, with every rule that could favour one side shown on and off.

Each cell is one whole `onnxwootz prune` process, timed by the wall clock around it (start-up,
teacher load, profile, pre-training, fine-tuning, export and checks: everything a user waits
for), in a fresh run directory, on a task with a held-out test split that no decision sees.
The answer's test accuracy is read against the same drop from the teacher's test accuracy.

Modes (the same images, the same candidates, the same seed in a cell):
- `method`: the tool's defaults (blocks pre-trained by distillation from their least-squares
  start, candidates assembled from them, distillation fine-tuning);
- `baseline`: the paper's (`--baseline`: L1-pruned candidates fine-tuned on the labels);
- `fair`: the strongest baseline without blocks (`--baseline --pretrain-init lsq
  --finetune-loss kd`: each candidate's convs refitted by least squares from the teacher's
  tensors, then distilled on every image the method sees).

Settings: `defaults` (16 candidates, the abandon rule on, the task's unlabeled pool), then one
factor changed at a time: `candidates=64`; `abandon=off` (`finetune_patience = 0`: no early
stop on a plateau or after a first evaluation that is no better than assembly, in both modes);
`projection=on`/`off` (`finetune_projection`: the abandon rule also stops a candidate whose
recent gain cannot take it to the bound in its budget);
`images=same` (the pool removed, so pre-training and distillation see only the labelled
training images the paper's baseline gets); `bn=frozen` (fine-tuning on BatchNorm's running
statistics, `--finetune-bn frozen`, in every mode); `loss=kd` (distillation fine-tuning on every
image in every mode); `lr=X` (the fine-tuning learning rate); `margin=Z` (the bound's noise
margin in standard errors, `--bound-margin`; 0: the value alone); `confirm=F` (the share of the
validation images held out to confirm a candidate, `--confirm-fraction`; 0: none); `pretrain=N`
(block pre-training steps, `--pretrain-steps`). Factors combine with `+`
(`loss=kd+lr=3e-5`). Per setting and mode, 3 seeds: median and range
of wall seconds, answer params, test accuracy, and the median change fine-tuning made to the
assembled candidates it touched.

    python -m benchmarks.b3_protocol [--tasks glyphs] [--seeds 0,1,2] [--alpha 1]
        [--settings defaults,candidates=64,abandon=off,images=same] [--modes method,baseline,fair]
        [--out bench-results/b3p.json]

Finished cells are kept in the output file (written atomically after each), and a re-run skips
them: an interrupted benchmark loses at most the cell it was in. `--fresh` starts over."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.b3_exploration import task_inputs
from onnxwootz.core.atomic import write_json, write_text

RESULTS = Path("bench-results")
MODES: dict[str, list[str]] = {
    "method": [],
    "baseline": ["--baseline"],
    "fair": ["--baseline", "--pretrain-init", "lsq", "--finetune-loss", "kd"],
}
SETTINGS = ("defaults", "candidates=64", "abandon=off", "images=same", "bn=frozen", "loss=kd")


def same_images(data: str, root: Path) -> str:
    """The task's .npz without its unlabeled pool (every mode then sees the labelled images only)."""
    with np.load(data, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "x_unlabeled"}
    path = root / f"{Path(data).stem}-same.npz"
    if not path.exists():
        np.savez(path, **arrays)
    return str(path)


FLAGS = {"candidates=64": ["--candidates", "64"], "bn=frozen": ["--finetune-bn", "frozen"],
         "loss=kd": ["--finetune-loss", "kd"]}
SPEC_LINES = {"abandon=off": "finetune_patience = 0", "projection=on": "finetune_projection = true",
              "projection=off": "finetune_projection = false"}


NUMBERS = {"lr": "finetune_lr", "margin": "bound_margin", "confirm": "confirm_fraction"}
"""Factors that set a spec number: `lr=3e-5`, `margin=2`, `confirm=0`."""
COUNTS = {"pretrain": "--pretrain-steps"}
"""Factors that set a whole number by its flag: `pretrain=100`."""


def factors(setting: str) -> list[str]:
    """A setting is `defaults` or factors joined by `+` (`loss=kd+lr=3e-5`)."""
    parts = [] if setting == "defaults" else setting.split("+")
    for part in parts:
        if (part not in FLAGS and part not in SPEC_LINES and part != "images=same" and _spec_number(part) is None
                and not _count_flag(part)):
            raise SystemExit(f"unknown setting '{part}'; use {', '.join(SETTINGS)}, lr=X, margin=Z, confirm=F, "
                             "pretrain=N, or factors joined by +")
    return parts


def _count_flag(part: str) -> list[str]:
    """The flag of a whole-number factor (`pretrain=100` -> --pretrain-steps 100), else []."""
    name, _, value = part.partition("=")
    return [COUNTS[name], value] if name in COUNTS and value.isdigit() else []


def _spec_number(part: str) -> str | None:
    """The spec line of a numeric factor (`margin=2` -> `bound_margin = 2.0`), else None."""
    name, _, value = part.partition("=")
    try:
        return f"{NUMBERS[name]} = {float(value)!r}" if name in NUMBERS else None
    except ValueError:
        return None


def cell_command(teacher: str, data: str, mode: str, setting: str, seed: int, alpha: float,
                 root: Path) -> list[str]:
    """The `onnxwootz prune` command line of one cell."""
    parts = factors(setting)
    run_dir = root / f"{Path(teacher).stem}-{setting.replace('=', '').replace('+', '-')}-{mode}-s{seed}"
    if "images=same" in parts:
        data = same_images(data, root)
    command = ["onnxwootz", "prune", teacher, "--data", data, "--run-dir", str(run_dir), "--fresh", "--json",
               "--seed", str(seed), "--constraint", f"accuracy >= teacher - {alpha:g}",
               "--output", str(run_dir / "answer.onnx"), *MODES[mode]]
    spec_lines = [SPEC_LINES[part] for part in parts if part in SPEC_LINES]
    spec_lines += [line for part in parts if (line := _spec_number(part))]
    for part in parts:
        command += FLAGS.get(part, []) + _count_flag(part)
    if spec_lines:
        spec = root / f"{setting.replace('=', '').replace('+', '-')}.toml"
        spec.write_text("".join(f"{line}\n" for line in spec_lines))
        command += ["--spec", str(spec)]
    return command


def run_cell(command: list[str], alpha: float) -> dict[str, Any]:
    """Run one prune process, timed by the wall clock; its measured figures."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    result = json.loads(done.stdout)
    touched = [t for t in result["trials"] if t["steps"]]
    test, teacher_test = result.get("test_metric"), result["teacher_test_metric"]
    return {
        "wall_seconds": wall, "reported_seconds": result["wall_seconds"], "params": result["params"],
        "teacher_params": result["teacher_params"], "accuracy": result["accuracy"], "test_accuracy": test,
        "teacher_test_accuracy": teacher_test,
        "within_bound_on_test": test is not None and test >= teacher_test - alpha - 1e-12,
        "candidates_tried": result["candidates_tried"],
        "assembly_median": statistics.median(t["accuracy_at_assembly"] for t in result["trials"])
        if result["trials"] else None,
        "finetune_gain_median": statistics.median(t["accuracy"] - t["accuracy_at_assembly"] for t in touched)
        if touched else None,
        "finetuned": len(touched),
    }


def _spread(values: list[float | None], digits: str = ".1f") -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "none"
    if len(known) == 1:
        return format(known[0], digits)
    return f"{statistics.median(known):{digits}} [{min(known):{digits}}, {max(known):{digits}}]"


def summary(cells: dict[str, dict[str, Any]], tasks: list[str], settings: list[str], modes: list[str],
            seeds: list[int]) -> tuple[list[dict[str, Any]], str]:
    """Rows per task, setting and mode (median [min, max] over seeds) and their markdown table."""
    rows, lines = [], [
        "| task | setting | mode | seeds | wall s | answer params | test acc. | within bound on test | "
        "median acc. at assembly | fine-tuning change (median) | wall vs method |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        for setting in settings:
            method_walls = [cells[k]["wall_seconds"] for s in seeds
                            if (k := key(task, setting, "method", s)) in cells]
            for mode in modes:
                done = [cells[k] for s in seeds if (k := key(task, setting, mode, s)) in cells]
                if not done:
                    continue
                walls = [c["wall_seconds"] for c in done]
                ratio = (statistics.median(walls) / statistics.median(method_walls)) if method_walls else None
                row = {"task": task, "setting": setting, "mode": mode, "seeds": len(done),
                       "wall_seconds_median": statistics.median(walls), "wall_vs_method": ratio,
                       "params": [c["params"] for c in done], "test_accuracy": [c["test_accuracy"] for c in done],
                       "within_bound_on_test": sum(c["within_bound_on_test"] for c in done)}
                rows.append(row)
                lines.append(
                    f"| {task} | {setting} | {mode} | {len(done)} | {_spread(walls)} | "
                    f"{_spread([c['params'] or c['teacher_params'] for c in done], '.0f')} | "
                    f"{_spread([c['test_accuracy'] for c in done], '.4f')} | {row['within_bound_on_test']}/{len(done)} | "
                    f"{_spread([c['assembly_median'] for c in done], '.3f')} | "
                    f"{_spread([c['finetune_gain_median'] for c in done], '+.3f')} | "
                    f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    return rows, "\n".join(lines) + "\n"


def key(task: str, setting: str, mode: str, seed: int) -> str:
    return f"{task}/{setting}/{mode}/{seed}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="glyphs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--alpha", type=float, default=1.0, help="accuracy drop in points (default 1)")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=RESULTS / "b3p.json")
    parser.add_argument("--fresh", action="store_true", help="forget the finished cells in --out")
    options = parser.parse_args(argv)
    tasks, settings, modes = (options.tasks.split(","), options.settings.split(","), options.modes.split(","))
    seeds = [int(s) for s in options.seeds.split(",")]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"unknown mode: {', '.join(unknown)}")
    for setting in settings:
        factors(setting)
    alpha = options.alpha / 100
    cells: dict[str, dict[str, Any]] = {}
    if options.out.exists() and not options.fresh:
        cells = json.loads(options.out.read_text()).get("cells", {})
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    with tempfile.TemporaryDirectory(prefix="b3p-") as tmp:
        for task in tasks:
            teacher, data = task_inputs(task)
            for setting in settings:
                for seed in seeds:
                    for mode in modes:
                        name = key(task, setting, mode, seed)
                        if name in cells:
                            continue
                        cells[name] = run_cell(cell_command(teacher, data, mode, setting, seed, alpha, Path(tmp)),
                                               alpha)
                        print(f"{name}: {cells[name]['wall_seconds']:.1f} s, params {cells[name]['params']}, "
                              f"test {cells[name]['test_accuracy']}", file=sys.stderr, flush=True)
                        write_json(options.out, {"benchmark": "B3 second protocol", "alpha": alpha,
                                                 "machine": machine, "cells": cells})
    rows, table = summary(cells, tasks, settings, modes, seeds)
    write_json(options.out, {"benchmark": "B3 second protocol", "alpha": alpha, "machine": machine,
                             "cells": cells, "rows": rows})
    write_text(options.out.with_suffix(".md"), f"# B3, second protocol (alpha {options.alpha:g} point, "
                                               f"{time.strftime('%Y-%m-%d')})\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
