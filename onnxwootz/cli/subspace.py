"""`onnxwootz subspace`: sample the promising subspace (CONFIGS.json) for a model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from onnxwootz.cli import JSON_OPTION, app, console, execute


@app.command()
def subspace(
    model: Path = typer.Argument(..., help="ONNX model file."),
    n: int = typer.Option(64, "-n", help="How many distinct configurations to sample."),
    rates: str = typer.Option("0.3,0.5,0.7", "--rates", help="Pruning rates per unit (0 is always allowed)."),
    seed: int = typer.Option(0, "--seed"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write CONFIGS.json here."),
    sampler: str = typer.Option("spread", "--sampler",
                                help="spread (sizes spread near uniformly, the paper's way) | profile (around each "
                                     "unit's measured sensitivity; needs data)."),
    data: Optional[str] = typer.Option(None, "--data", help="For --sampler profile: the dataset whose validation "
                                       "split measures the sensitivity (default: the one the model's metadata names)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Sample N configurations: sizes spread, or around the per-unit sensitivity profile."""
    from onnxwootz.core.errors import BadSpecError
    from onnxwootz.sampling import subspace as run

    def parsed() -> list[float]:
        try:
            return [float(r) for r in rates.split(",") if r.strip()]
        except ValueError:
            raise BadSpecError(f"--rates must be comma-separated numbers, got '{rates}'") from None

    def render(result) -> None:
        table = Table(title=f"{len(result.configurations)} configurations over {len(result.units)} units")
        for column in ("#", "rates", "params", "MACs"):
            table.add_column(column)
        for number, config in enumerate(result.configurations):
            table.add_row(str(number), " ".join(f"{r:g}" for r in config.rates), f"{config.params:,}", f"{config.macs:,}")
        console.print(table)
        if result.output:
            console.print(f"written to {result.output}")

    execute(lambda: run(model, n, parsed(), seed, output, sampler=sampler, data=data), json_output, render)
