"""`onnxwootz analyze` and `onnxwootz apply`: look at a model, prune it without training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from onnxwootz.cli import JSON_OPTION, app, console, execute

INPUT_SHAPE = typer.Option(None, "--input-shape", help="Concrete input shape for dynamic dims, e.g. 1,3,224,224.")
GRANULARITY = typer.Option("module", "--granularity", "-g",
                           help="Units: 'module' (the paper's: one rate per module, its top layer kept) "
                                "or 'group' (every prunable channel group on its own).")


def _fmt(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


@app.command()
def analyze(
    model: Path = typer.Argument(..., help="ONNX model file (external data is read from its folder)."),
    input_shape: Optional[str] = INPUT_SHAPE,
    granularity: str = GRANULARITY,
    json_output: bool = JSON_OPTION,
) -> None:
    """Show a model's inputs, ops, params, MACs, heaviest layers, pruning units and kept channel groups."""
    from onnxwootz.analysis import analyze as run
    from onnxwootz.core.onnx_helpers import parse_input_shape

    def render(result) -> None:
        console.print(f"[bold]{result.model}[/]  opset {result.opset}  params {_fmt(result.params)}  "
                      f"MACs {_fmt(result.macs)}  channel groups {result.groups}")
        for title, tensors in (("inputs", result.inputs), ("outputs", result.outputs)):
            console.print(f"{title}: " + ", ".join(f"{t.name} {t.shape}" for t in tensors))
        console.print("ops: " + ", ".join(f"{op} {n}" for op, n in result.ops.items()))
        heavy = Table(title="heaviest layers")
        for column in ("node", "op", "params", "MACs"):
            heavy.add_column(column)
        for layer in result.heaviest:
            heavy.add_row(layer.node, layer.op, _fmt(layer.params), _fmt(layer.macs))
        console.print(heavy)
        units = Table(title=f"units ({result.granularity} granularity)")
        for column in ("#", "unit", "first filter", "groups", "channels", "params", "MACs"):
            units.add_column(column)
        for number, unit in enumerate(result.units):
            units.add_row(str(number), unit.name, unit.label, str(len(unit.groups)), str(unit.channels), _fmt(unit.params),
                          _fmt(unit.macs))
        console.print(units)
        kept = Table(title="kept channel groups")
        for column in ("group", "channels", "filters of", "reason"):
            kept.add_column(column)
        for group in result.kept_groups:
            shown = ", ".join(group.producers[:2]) + (" ..." if len(group.producers) > 2 else "")
            kept.add_row(str(group.group), str(group.channels), shown, group.reason)
        console.print(kept)

    execute(lambda: run(model, parse_input_shape(input_shape), granularity), json_output, render)


@app.command()
def apply(
    model: Path = typer.Argument(..., help="ONNX model file."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the pruned model."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="Where to write PLAN.json (config and every slice)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Prune every unit at this rate, in [0, 1)."),
    config: Optional[Path] = typer.Option(None, "--config",
                                          help="JSON: {unit: rate}, a list of rates in unit order, or a PLAN.json."),
    granularity: str = GRANULARITY,
    round_to: int = typer.Option(1, "--round-to", help="Round kept channel counts to a multiple of N (8, 16, 32)."),
    input_shape: Optional[str] = INPUT_SHAPE,
    fold_bn: bool = typer.Option(False, "--fold-bn", help="Fold BatchNorm into the preceding conv in the output."),
    opset: Optional[int] = typer.Option(None, "--opset", help="Convert the output to this opset."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Structural L1 filter pruning for one configuration, without training."""
    from onnxwootz.core.onnx_helpers import parse_input_shape
    from onnxwootz.pruning import apply as run

    def render(result) -> None:
        table = Table(title=f"{result.model} -> {result.output}")
        for column in ("unit", "rate", "channels", "kept"):
            table.add_column(column)
        for unit in result.units:
            table.add_row(unit.name, f"{unit.rate:g}", str(unit.channels), str(unit.kept))
        console.print(table)
        console.print(f"params {_fmt(result.params_before)} -> {_fmt(result.params_after)} "
                      f"({1 - result.params_after / max(result.params_before, 1):.1%} less), "
                      f"MACs {_fmt(result.macs_before)} -> {_fmt(result.macs_after)} "
                      f"({1 - result.macs_after / max(result.macs_before, 1):.1%} less)")
        if result.verified:
            console.print(f"checked: computes what the masked original computes ({result.verified})")
        else:
            console.print(f"[yellow]not verified[/]: {result.verification}")
        if result.plan:
            console.print(f"plan written to {result.plan}")

    execute(lambda: run(model, rate=rate, config=config, granularity=granularity, round_to=round_to, output=output,
                        plan=plan, input_shape=parse_input_shape(input_shape), fold_bn=fold_bn, opset=opset),
            json_output, render)
