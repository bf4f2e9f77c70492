"""`onnxwootz blocks`: tuning blocks and composite vectors for a promising subspace."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from onnxwootz.cli import JSON_OPTION, app, console, execute
from onnxwootz.core.results import Result

_SHOWN_NETWORKS = 20  # a 500-network subspace would bury the block table; --json has them all


@app.command("blocks")
def blocks_command(
    configs: Path = typer.Argument(..., help="CONFIGS.json: a list of configurations, each a list of rates in unit order."),
    model: Optional[Path] = typer.Option(None, "--model", help="Take unit names (and count) from this ONNX model."),
    strategy: str = typer.Option("sequitur", "--strategy", help="sequitur (the paper's) or per-unit (one block per pruned unit)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Identify tuning blocks (Sequitur, METHOD.md step 1) and each network's composite vector."""
    from onnxwootz.tuning_blocks import blocks

    execute(lambda: blocks(configs, model=model, strategy=strategy), json_output, _render)


def _render(result: Result) -> None:
    from rich.table import Table

    from onnxwootz.tuning_blocks import BlocksResult

    assert isinstance(result, BlocksResult)
    table = Table(title=f"{len(result.blocks)} tuning blocks ({result.strategy})")
    for column in ("#", "block", "units", "networks", "group"):
        table.add_column(column, justify="right" if column in ("#", "networks", "group") else "left")
    group_of = {index: g for g, members in enumerate(result.groups) for index in members}
    for index, block in enumerate(result.blocks):
        first, last = result.units[block.start], result.units[block.stop - 1]
        span = first if block.stop - block.start == 1 else f"{first}..{last}"
        table.add_row(str(index), " ".join(block.symbols), span, str(block.frequency), str(group_of[index]))
    console.print(table)

    networks = Table(title="composite vectors")
    networks.add_column("network", justify="right")
    networks.add_column("blocks")
    networks.add_column("uncovered units")
    for number, composite in enumerate(result.networks[:_SHOWN_NETWORKS]):
        networks.add_row(str(number), " ".join(map(str, composite.blocks)),
                         " ".join(result.units[u] for u in composite.uncovered))
    console.print(networks)
    if len(result.networks) > _SHOWN_NETWORKS:
        console.print(f"... {len(result.networks) - _SHOWN_NETWORKS} more networks (use --json for all)")
    total = len(result.networks) * len(result.units)
    covered = total - sum(len(c.uncovered) for c in result.networks)
    console.print(f"{len(result.networks)} networks, {len(result.units)} units; "
                  f"{covered}/{total} unit slots covered by blocks; {len(result.groups)} non-overlapping groups")
