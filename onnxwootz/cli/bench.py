"""`onnxwootz bench`: latency of one or more models side by side under ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from onnxwootz.cli import JSON_OPTION, RichProgress, app, console, execute
from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.results import Result

if TYPE_CHECKING:
    from onnxwootz.runtime.bench import BenchResult


def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]."""
    try:
        batches = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadSpecError(f"--batch must be comma-separated integers, got '{text}'") from None
    if not batches:
        raise BadSpecError("--batch needs at least one batch size")
    return batches


@app.command()
def bench(
    models: List[Path] = typer.Argument(..., metavar="MODEL", help="ONNX models; ratios are against the first."),
    provider: str = typer.Option("cpu", "--provider", help="cpu, cuda or tensorrt."),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, e.g. 1,8,32."),
    threads: int = typer.Option(1, "--threads", help="ONNX Runtime intra-op threads (pinned)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs per model and batch (at least 1)."),
    runs: int = typer.Option(50, "--runs", help="Timed runs per model and batch."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="Shape of the first input for its dynamic dims, e.g. 1,3,224,224 (dim 0 becomes each --batch)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Time models with pinned threads; runs alternate between the models so drift hits all alike."""

    def call() -> Result:
        from onnxwootz.core.onnx_helpers import parse_input_shape
        from onnxwootz.runtime.bench import bench as run_bench

        return run_bench(models, provider=provider, batches=parse_batches(batch), threads=threads,
                         warmup=warmup, runs=runs, input_shape=parse_input_shape(input_shape),
                         progress=RichProgress(enabled=not json_output))

    execute(call, json_output, _render)


def _render(result: BenchResult) -> None:
    from rich.table import Table

    ratios = {(r.model, r.batch): r.p50_ratio for r in result.ratios}
    ran_on = sorted({p for entry in result.entries for p in entry.providers})
    table = Table(title=f"{result.provider} on {result.device}, {result.threads} thread(s), "
                        f"{result.runs} runs after {result.warmup} warm-up",
                  caption=f"ran on: {', '.join(ran_on) or '-'}")
    table.add_column("model")
    for name in ("batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "vs first"):
        table.add_column(name, justify="right")
    for entry in result.entries:
        ratio = ratios.get((entry.model, entry.batch))
        table.add_row(entry.model, str(entry.batch), f"{entry.p50_ms:.3f}", f"{entry.p90_ms:.3f}",
                      f"{entry.p99_ms:.3f}", f"{entry.throughput:.1f}", "-" if ratio is None else f"{ratio:.3f}x")
    console.print(table)
    for skip in result.skipped:
        console.print(f"skipped {skip.model} at batch {skip.batch}: {skip.reason}", highlight=False)
