"""`onnxwootz report`: plots, tables and an HTML page for a finished `prune` run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from onnxwootz.cli import JSON_OPTION, RichProgress, app, console, execute


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="Run directory of `onnxwootz prune` (summary.json, journal.jsonl)."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="Baseline run directory to compare with "
                                           "(default: RUN_DIR-baseline when it exists)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the report (default RUN_DIR/report)."),
    bench: bool = typer.Option(True, "--bench/--no-bench", help="Measure teacher and answer latency (batch 1)."),
    provider: str = typer.Option("cpu", "--provider", help="cpu, cuda or tensorrt, for the latency measurement."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Write report.md, a self-contained report.html and PNG plots for a prune run."""
    from onnxwootz.reporting import report as run

    def render(result) -> None:
        from rich.table import Table

        console.print(f"{result.mode} run {result.run_dir}: {result.objective} with {result.constraint}",
                      highlight=False, soft_wrap=True)
        table = Table(title="teacher vs answer")
        table.add_column("")
        for row in result.models:
            table.add_column(row.role, justify="right")
        metric = result.metric or "accuracy"
        figures = [(metric if result.metric is None else f"val {metric}", "accuracy")]
        if result.models[0].test_metric is not None:
            figures.append((f"test {metric}", "test_metric"))
        for label, field in (*figures, ("params", "params"), ("MACs", "macs"), ("file bytes", "file_bytes"),
                             (f"p50 ms ({result.provider})", "latency_p50_ms")):
            values = [getattr(row, field) for row in result.models]
            table.add_row(label, *("-" if v is None else f"{v:.4f}" if isinstance(v, float) else f"{v:,}"
                                   for v in values))
        console.print(table)
        if result.splits:
            console.print("images: " + ", ".join(f"{name} {count:,}" for name, count in result.splits.items()),
                          highlight=False, soft_wrap=True)
        for row in result.runs:
            console.print(f"{row.mode}: {row.candidates_tried} of {row.candidates} candidates tried in "
                          f"{row.wall_seconds:.1f} s, median accuracy at assembly "
                          f"{row.median_accuracy_at_assembly:.4f}" if row.median_accuracy_at_assembly is not None
                          else f"{row.mode}: no candidate tried", highlight=False, soft_wrap=True)
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        console.print(f"[bold green]report:[/] {Path(result.output) / 'report.html'}", highlight=False, soft_wrap=True)

    execute(lambda: run(run_dir, compare=compare, output=output, bench=bench, provider=provider,
                        progress=RichProgress(not json_output)), json_output, render)
