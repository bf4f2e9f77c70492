"""`onnxwootz prune`: the whole method on a teacher model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from onnxwootz.cli import JSON_OPTION, RichProgress, app, console, execute


@app.command()
def prune(
    model: Path = typer.Argument(..., help="Trained teacher (ONNX); its 'onnxwootz.preprocess' metadata, or "
                                 "--preprocess, says how to feed it."),
    data: Optional[str] = typer.Option(None, "--data", help="digits | DIR (class folders, images with labels.tsv, or "
                                       "plain images; train/ val/ test/ optional) | FILE.npz (x_train, x_val, x_test "
                                       "with or without y_*, or x alone; optional x_unlabeled). Val decides, test "
                                       "only reports. Default: the dataset the model's metadata names."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="TOML spec; flags below override it."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Resumable run directory (default runs/<model>)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the answer (default in the run dir)."),
    candidates: Optional[int] = typer.Option(None, "--candidates", "-n", help="Size of the promising subspace."),
    configs: Optional[str] = typer.Option(None, "--configs", help="CONFIGS.json: your own subspace."),
    rates: Optional[str] = typer.Option(None, "--rates", help="Pruning rates to sample, e.g. 0.3,0.5,0.7."),
    objective: Optional[str] = typer.Option(None, "--objective", help="min size | min macs | min latency."),
    constraint: Optional[str] = typer.Option(None, "--constraint",
                                             help="'accuracy >= teacher - 0.01' or 'accuracy >= 0.95'; 'accuracy' "
                                                  "means the metric, which may be named: 'map_iou >= 0.9'."),
    bound_margin: Optional[float] = typer.Option(None, "--bound-margin",
                                                 help="Z: a candidate meets the bound when its validation metric "
                                                      "less Z standard errors (bootstrap over the validation "
                                                      "images, paired with the teacher) does; 0: the value alone. "
                                                      "Default 1."),
    confirm_fraction: Optional[float] = typer.Option(None, "--confirm-fraction",
                                                     help="Share of the validation images held out to confirm a "
                                                          "candidate that met the bound on the rest (with the same "
                                                          "margin): the answer is not the one luckiest on them. "
                                                          "0: off. Default 0.5."),
    metric: Optional[str] = typer.Option(None, "--metric",
                                         help="top1 (class labels) | agreement (top-1 with the teacher) | fidelity "
                                              "(R^2 of every output vs the teacher's) | map_iou or map_iou@THR (IoU "
                                              "of thresholded maps, THR 0.3 by default) | text (CTC exact match, "
                                              "text labels). Default: top1 with class labels, text with text "
                                              "labels, agreement without labels (classifiers)."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess",
                                             help="imagenet | unit | none (arrays are model inputs) | a JSON object "
                                                  "| FILE.json. Default: the model's metadata."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape",
                                              help="The first input's shape, e.g. 1,3,640,640 (for dynamic dims; "
                                                   "default: 1 x the data's shape)."),
    subspace: Optional[str] = typer.Option(None, "--subspace",
                                           help="spread (sizes spread, the paper's sampling) | profile (around "
                                                "each unit's measured sensitivity: configurations share runs of "
                                                "rates, so Sequitur finds multi-unit blocks)."),
    blocks: Optional[str] = typer.Option(None, "--blocks", help="sequitur | per-unit."),
    pretrain: Optional[str] = typer.Option(None, "--pretrain", help="lazy (blocks trained when first needed) | eager."),
    profile_init: Optional[str] = typer.Option(None, "--profile-init",
                                               help="With --subspace profile: l1 (each unit L1-pruned alone) | lsq "
                                                    "(from its block's least-squares start; slower)."),
    profile_budget: Optional[float] = typer.Option(None, "--profile-budget",
                                                   help="With --subspace profile: keep each candidate's summed "
                                                        "single-unit drops within this multiple of the allowed "
                                                        "drop (damage taken as additive; default: no limit)."),
    pretrain_init: Optional[str] = typer.Option(None, "--pretrain-init",
                                                help="lsq (least-squares refit of the convs that lost inputs, "
                                                     "then training) | l1 (the paper: L1-pruned weights). Default: "
                                                     "lsq, or l1 with --baseline; with --baseline, lsq refits every "
                                                     "candidate (the fair baseline: no blocks)."),
    pretrain_steps: Optional[int] = typer.Option(None, "--pretrain-steps"),
    finetune_steps: Optional[int] = typer.Option(None, "--finetune-steps"),
    finetune_loss: Optional[str] = typer.Option(None, "--finetune-loss",
                                                help="ce (labels, the paper) | kd (distill the teacher's outputs on "
                                                     "every image, labelled or not). Default: kd, or ce with "
                                                     "--baseline on a top1 metric."),
    finetune_bn: Optional[str] = typer.Option(None, "--finetune-bn",
                                              help="batch (BatchNorm on each batch's statistics, train mode) | "
                                                   "frozen (on the running statistics: steadier on small batches)."),
    batch: Optional[int] = typer.Option(None, "--batch"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Round kept channel counts to a multiple of N."),
    fold_bn: bool = typer.Option(False, "--fold-bn", help="Fold BatchNorm into the preceding conv in the answer."),
    opset: Optional[int] = typer.Option(None, "--opset", help="Convert the answer to this opset."),
    baseline: bool = typer.Option(False, "--baseline", help="Explore from L1-pruned weights (the paper's default)."),
    executor: str = typer.Option("local", "--executor", help="local | ray (candidates as Ray tasks)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local one)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over: remove the tool's own files from the run "
                                                     "directory (never anything else)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Find the smallest (or fastest) pruned model that meets an accuracy bound, with composability."""
    from onnxwootz.core.errors import BadSpecError
    from onnxwootz.core.onnx_helpers import parse_input_shape
    from onnxwootz.executors import LocalExecutor, RayExecutor
    from onnxwootz.pipeline import prune as run

    def chosen_executor():
        if executor == "local":
            return LocalExecutor()
        if executor == "ray":
            return RayExecutor(address=address)
        raise BadSpecError(f"--executor must be 'local' or 'ray', got '{executor}'")

    rate_list = None
    if rates is not None:
        try:
            rate_list = [float(r) for r in rates.split(",") if r.strip()]
        except ValueError:
            rate_list = [-1.0]

    def render(result) -> None:
        table = Table(title=f"{result.mode}: {result.objective} with {result.constraint}")
        for column in ("cand.", "params", "MACs", "acc. at assembly", "final acc.", "steps", "met", "seconds"):
            table.add_column(column)
        for trial in result.trials:
            table.add_row(str(trial.candidate), f"{trial.params:,}", f"{trial.macs:,}", f"{trial.accuracy_at_assembly:.4f}",
                          f"{trial.accuracy:.4f}", str(trial.steps), "yes" if trial.met else "no", f"{trial.seconds:.1f}")
        console.print(table)
        console.print(f"teacher {result.metric} {result.teacher_accuracy:.4f} (test {result.teacher_test_metric:.4f}), "
                      f"bound {result.bound:.4f} (met with a {result.bound_margin:g} s.e. margin"
                      + (f"; confirmation split: teacher {result.confirm_teacher_metric:.4f}, bound "
                         f"{result.confirm_bound:.4f}" if result.confirm_bound is not None else "") + "); "
                      f"{result.candidates_tried} of {result.candidates} candidates tried, {result.blocks_trained} "
                      f"block(s) pre-trained ({result.pretrain_seconds:.1f} s), {result.wall_seconds:.1f} s in all")
        if result.model:
            console.print(f"[bold green]answer:[/] {result.model}: {result.metric} {result.accuracy:.4f} "
                          f"(test {result.test_metric:.4f}), params "
                          f"{result.params:,} ({1 - result.params / result.teacher_params:.1%} smaller), MACs {result.macs:,}")
        else:
            console.print("[bold yellow]no candidate met the constraint[/]")

    execute(lambda: run(model, data=data, spec=spec, run_dir=run_dir, output=output, fresh=fresh,
                        executor=chosen_executor(),
                        progress=RichProgress(not json_output), candidates=candidates, configs=configs, rates=rate_list,
                        objective=objective, constraint=constraint, bound_margin=bound_margin,
                        confirm_fraction=confirm_fraction, subspace=subspace, profile_init=profile_init,
                        profile_budget=profile_budget,
                        blocks=blocks, pretrain=pretrain,
                        pretrain_init=pretrain_init, pretrain_steps=pretrain_steps,
                        finetune_steps=finetune_steps, finetune_loss=finetune_loss, finetune_bn=finetune_bn,
                        batch=batch, device=device,
                        seed=seed, baseline=baseline or None, round_to=round_to, fold_bn=fold_bn or None,
                        opset=opset, metric=metric, preprocess=preprocess, input_shape=parse_input_shape(input_shape)), json_output, render)
