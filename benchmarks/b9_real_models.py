"""B9: `onnxwootz prune` on real-weight models: PaddleOCR's text-orientation classifier, PP-OCRv4
text detector and PP-OCRv4 recognizer (models/ocr.py), each pruned on data the project renders
from installed fonts (benchmarks/tasks/ocr.py), on 2 CPU cores within 30 minutes.

Per model: the data are rendered once (cached under bench-results/b9-data/), `onnxwootz.prune`
runs with the teacher's preprocessing, its metric (top-1 for the classifier, IoU of the maps
thresholded at 0.3 against the teacher's for the detector, exact strings for the recognizer)
and a budget sized from the measured per-image costs (TASKS), timed by the wall clock. The
report gives params and MACs (teacher vs answer), ONNX Runtime latency at batch 1 with 2
threads (teacher vs answer, alternating runs), the metric on the held-out test split, and the
wall seconds. Target: a smaller model within its bound on every model, each within 1800 s.

Run: `python -m benchmarks.b9_real_models [--models cls,det,rec] [--seeds 0] [--set finetune_bn=frozen]
[--out bench-results/b9.json]` (`--set FIELD=VALUE`, repeatable, overrides a spec field of every
model run, the value read as JSON when it parses, else as a string)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmarks.tasks import ocr as task

RESULTS = Path("bench-results")
THREADS = 2
BUDGET_S = 1800.0
RATES = [0.2, 0.35, 0.5]
"""Milder than the tool's default 0.3/0.5/0.7: on these compact mobile-style OCR nets a first
run at the defaults spent its budget on all-0.7 candidates that were at chance right after
assembly (cls 0.50 -> 0.84 after 200 steps, 421 s; det map IoU 0.00 -> 0.74, 416 s). At these
rates, spread sampling still prunes units that the classifier cannot lose (L1-pruned alone at
0.2, its first unit drops top-1 from 0.97 to 0.80; others lose nothing at 0.5), so every task
samples around the measured sensitivity profile (`--subspace profile`)."""


@dataclass(frozen=True)
class ModelTask:
    """One teacher, how its data are rendered, and the prune options for it."""

    render: Callable[..., task.RenderSummary]
    counts: tuple[int, int, int]
    preprocess: dict
    metric: str
    constraint: str
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> list[int]:
        return [1, 3, *self.preprocess["size"]]


PRETRAIN_LR = 1e-3
"""The default 0.01 is too large for these trained weights: it took a least-squares start of a
PP-OCRv4 recognizer block from 0.0011 to 0.067 relative MSE in 60 steps, 1e-3 to 0.0010
(pre-training now keeps the start when training makes it worse, so 0.01 would leave the blocks
at their least-squares start)."""

REC_FINDINGS = {"profile_init": "lsq", "profile_budget": 6.0, "finetune_bn": "frozen", "finetune_lr": 3e-5}
"""What the recognizer needs, each measured on it (README, B9): the profile from the blocks'
least-squares start (L1 alone shows its backbone units destroyed at 0.2, so they were never
pruned), a drop budget of 6x the allowed 0.05 (unbudgeted, candidates summed 0.4-2.6 and read
0.00-0.03 assembled), and fine-tuning on BatchNorm's running statistics at 3e-5 (on batch-8
statistics a candidate fell from 0.49 at assembly to 0.00 in 20 steps; frozen, it rose to 0.84
in 60)."""

# The detector fine-tunes on BatchNorm's running statistics too: its candidate with 1.77x fewer
# params reached map IoU 0.894 in 300 steps on batch-8 statistics, 0.906 in 150 frozen (README, B9).
TASKS: dict[str, ModelTask] = {
    "cls": ModelTask(task.render_cls, (800, 1000, 1000), task.PREPROCESS["cls"], "top1", "accuracy >= teacher - 0.01",
                     {"candidates": 8, "rates": RATES, "subspace": "profile", "pretrain_steps": 100,
                      "pretrain_lr": PRETRAIN_LR, "finetune_steps": 100, "eval_every": 25, "batch": 32}),
    "det": ModelTask(task.render_det, (240, 60, 100), task.PREPROCESS["det"], "map_iou", "map_iou >= 0.9",
                     {"candidates": 6, "rates": RATES, "subspace": "profile", "pretrain_steps": 100,
                      "pretrain_lr": PRETRAIN_LR, "finetune_steps": 300, "eval_every": 50, "batch": 8,
                      "finetune_bn": "frozen"}),
    "rec": ModelTask(task.render_rec, (600, 150, 300), task.PREPROCESS["rec"], "text", "accuracy >= teacher - 0.05",
                     {"candidates": 6, "rates": RATES, "subspace": "profile", "pretrain_steps": 60,
                      "pretrain_lr": PRETRAIN_LR, "finetune_steps": 60, "eval_every": 20, "batch": 8,
                      **REC_FINDINGS}),
}
"""Counts are train/val/test images. The classifier validates and tests on 1000 each: with 400
its answer met the 1-point bound on val (0.955 against 0.955) but not on test (0.9325 against
0.96); one point is then four images, about the standard error of an accuracy near 0.96, so
picking the smallest candidate that meets the bound picks a lucky one. The detector had three
module units, one of them its backbone and FPN (no single tensor cuts them, as the FPN reads
every stage), which lost all of its map IoU pruned alone at 0.2; split at parked frontiers
(passes/units.py) it has 27. Budgets from the teachers' measured costs
per image on 2 threads (torch view forward + backward, CPU seconds; `python -m
benchmarks.tasks.ocr --check --timing`): cls 0.06 (batch 32: ~1 s a step on 2 idle cores), det
160x160 0.18 (batch 8: ~0.7 s), rec 0.37 (batch 8: ~1.5 s); fine-tuning budgets fit the 1800 s
bound on a shared machine. The recognizer's fine-tuning (REC_FINDINGS): at the default 3e-4
on batch statistics its first candidate went from 0.73 exact strings at assembly to 0.00 after
20 steps (0.71 at 1e-4, 0.89 at 3e-5, same seed and batches); at 3e-5 on batch statistics a run
rose to 0.89 and fell to 0.59 by step 60 and answered with a candidate that read 0.90 on test
against the teacher's 0.98. On the running statistics at 3e-5 candidates rise steadily."""


def dataset(name: str, seed: int, root: Path) -> Path:
    """The rendered dataset for `name` and `seed`, made on first use (a pure function of both)."""
    spec = TASKS[name]
    n_train, n_val, n_test = spec.counts
    folder = root / f"{name}-seed{seed}-{n_train}-{n_val}-{n_test}"
    if not folder.is_dir():
        spec.render(folder, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    return folder


def latency(teacher: Path, answer: Path | None, input_shape: list[int], runs: int,
            threads: int = THREADS) -> dict[str, float | None]:
    """p50 milliseconds at batch 1 (CPU) and the answer's paired speed-up."""
    from onnxwootz.runtime.bench import bench

    models = [teacher] if answer is None else [teacher, answer]
    result = bench(models, threads=threads, batches=(1,), warmup=max(3, runs // 10), runs=runs, input_shape=input_shape)
    p50 = [entry.p50_ms for entry in result.entries]
    paired = [ratio.paired_ratio for ratio in result.ratios if ratio.model != result.models[0]]
    return {"teacher_ms": p50[0], "answer_ms": p50[1] if answer is not None else None,
            "speedup": 1.0 / paired[0] if paired else None}


def run_one(name: str, seed: int, out_dir: Path, runs: int, threads: int = THREADS,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    import onnxwootz
    from models.ocr import ocr_model

    spec = TASKS[name]
    options = {**spec.spec, **(overrides or {})}
    teacher = ocr_model(name)
    data = dataset(name, seed, out_dir / "b9-data")
    run_dir = out_dir / "b9-runs" / f"{name}-seed{seed}"
    start = time.perf_counter()
    result = onnxwootz.prune(
        teacher, data=str(data), run_dir=run_dir, output=run_dir / "answer.onnx", fresh=True,
        preprocess=json.dumps(spec.preprocess), metric=spec.metric, constraint=spec.constraint,
        input_shape=spec.input_shape, seed=seed, threads=threads, **options,
    )
    wall = time.perf_counter() - start
    answer = Path(result.model) if result.model else None
    return {
        "model": name, "seed": seed, "metric": spec.metric, "constraint": spec.constraint,
        "counts": dict(zip(task.SPLITS, spec.counts)), "spec": options,
        "teacher_params": result.teacher_params, "params": result.params,
        "teacher_macs": result.teacher_macs, "macs": result.macs,
        "teacher_test_metric": result.teacher_test_metric, "test_metric": result.test_metric,
        "bound": result.bound, "met": answer is not None, "candidates_tried": result.candidates_tried,
        "wall_seconds": wall, "within_budget": wall <= BUDGET_S, "threads": threads,
        "latency": latency(teacher, answer, spec.input_shape, runs, threads),
        "prune": result.to_dict(),
    }


def table(rows: list[dict[str, Any]]) -> str:
    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    def num(value: float | None, digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| model | seed | params T -> A | MACs T -> A | ORT ms T -> A (speed-up) | test metric T -> A (bound) | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lat = row["latency"]
        lines.append(
            f"| {row['model']} | {row['seed']} | {row['teacher_params']:,} -> {row['params'] or 0:,} ({ratio(row['teacher_params'], row['params'])}) "
            f"| {row['teacher_macs']:,} -> {row['macs'] or 0:,} ({ratio(row['teacher_macs'], row['macs'])}) "
            f"| {num(lat['teacher_ms'], 2)} -> {num(lat['answer_ms'], 2)} ({num(lat['speedup'], 2)}x) "
            f"| {num(row['teacher_test_metric'])} -> {num(row['test_metric'])} ({num(row['bound'])}) "
            f"| {row['wall_seconds']:.0f}{'' if row['within_budget'] else ' (over)'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from onnxwootz.core.atomic import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (data and pruning)")
    parser.add_argument("--out", type=Path, default=RESULTS / "b9.json")
    parser.add_argument("--runs", type=int, default=100, help="latency runs per model at batch 1")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch and ONNX Runtime threads")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a spec field of every model run (repeatable)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        field_name, separator, value = item.partition("=")
        if not separator or not field_name:
            parser.error(f"--set takes FIELD=VALUE, got '{item}'")
        try:
            overrides[field_name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field_name] = value
    names = [name for name in args.models.split(",") if name]
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        parser.error(f"--models takes names from {', '.join(TASKS)}, got '{args.models}'")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, got '{args.seeds}'")
    rows = []
    for seed in seeds:
        for name in names:
            rows.append(run_one(name, seed, args.out.parent, args.runs, args.threads, overrides))
            write_json(args.out, {"benchmark": "b9", "threads": args.threads, "budget_s": BUDGET_S, "rows": rows})
    print(table(rows))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
