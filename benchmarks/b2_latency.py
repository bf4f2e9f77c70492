"""B2: ONNX Runtime CPU latency of pruned models against the MACs they save.

ResNet-50 and MobileNetV2 (torchvision sizes, 1000 classes, 224x224) are exported with the
legacy exporter (eval mode, BatchNorm folded, dynamic batch) and pruned by `apply` at a uniform
rate of 0.5 with group granularity, plainly and with `round_to` 8 and 16 (MLAS's NCHWc layout on
AVX-512 wants channel counts that are multiples of 16). Torch-Pruning (MetaPruner, L1 magnitude,
no global pruning, classifier left whole) prunes the same torch module, its ratio bisected until
its MACs, counted on its export by our counter, are within 1% of ours. All models are timed in
one alternating `bench` run per batch size with 2 intra-op threads; the speed-up of a model is
1 / the median of its per-pair latency ratios against the original.
Target: speed-up >= 0.9 x MACs ratio, and >= Torch-Pruning's.

A round_to variant with the same weight shapes as plain `ours` is the same model and is not
timed again. Beside the timings, each model's ONNX Runtime graph after optimization is inspected
(convolutions in the blocked NCHWc layout, layout reorders), and a short profiled run at batch 1
gives the share of time per operator type and per kind of convolution (pointwise, spatial,
depthwise, whose MACs shrink differently under pruning) and the MACs the kernels really executed
(NCHWc pads channel counts to its block).

Run: `python -m benchmarks.b2_latency [--runs1 100] [--runs32 20] [--threads 2]`."""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from models import builders
from models.export import export_legacy
from onnxwootz import apply, bench
from onnxwootz.core.onnx_helpers import input_shapes
from onnxwootz.counting import count
from onnxwootz.runtime.shapes import static_shapes

RESULTS = Path("bench-results")
SHAPE = (1, 3, 224, 224)
RATE = 0.5
MACS_TOLERANCE = 0.01
NETWORKS: dict[str, Callable[[], nn.Module]] = {"resnet50": builders.resnet50, "mobilenet_v2": builders.mobilenet_v2}


def conv_kind(weight: list[int], channels_in: int) -> str:
    """depthwise (one input channel per filter, as many groups as channels), pointwise (1x1)
    or spatial: the three kinds whose MACs shrink differently when channels are pruned."""
    if weight[1] == 1 and channels_in == weight[0] > 1:
        return "depthwise"
    return "pointwise" if all(k == 1 for k in weight[2:]) else "spatial"


def onnx_costs(path: Path) -> dict[str, Any]:
    """Params, MACs per image (the project's counter, so every model is counted alike), MACs
    per kind of layer, activation elements per image (every node output: the memory traffic
    that shrinks only linearly with channels), and the sorted shapes of the non-scalar weights
    (equal shapes: the same architecture, whatever scalar constants the graphs hold)."""
    model = onnx.load(str(path))
    shapes = static_shapes(model, input_shapes(model, list(SHAPE)))
    params, macs, costs = count(model, shapes)
    kinds: collections.Counter[str] = collections.Counter()
    for node, cost in zip(model.graph.node, costs):
        if node.op_type == "Conv":
            kinds[conv_kind(shapes[node.input[1]], shapes[node.input[0]][1])] += cost.macs
        else:
            kinds["other"] += cost.macs
    activations = sum(int(np.prod(shapes[out])) for node in model.graph.node for out in node.output if out in shapes)
    signature = sorted(list(init.dims) for init in model.graph.initializer if init.dims)
    return {"params": params, "macs": macs, "macs_by_kind": dict(kinds), "activations": activations,
            "signature": signature}


def classifier(module: nn.Module) -> nn.Module:
    """The final Linear layer, which both pruners leave whole (its outputs are the classes)."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


def torch_pruning_version() -> str | None:
    try:
        import torch_pruning
    except ImportError:
        return None
    return getattr(torch_pruning, "__version__", "unknown")


def torch_prune(module: nn.Module, ratio: float) -> nn.Module:
    """A pruned copy: MetaPruner, L1 magnitude, the same ratio for every group, one step."""
    import torch_pruning as tp

    pruned = copy.deepcopy(module)
    pruner = tp.pruner.MetaPruner(
        pruned, torch.zeros(SHAPE), importance=tp.importance.MagnitudeImportance(p=1), global_pruning=False,
        pruning_ratio=ratio, ignored_layers=[classifier(pruned)],
    )
    pruner.step()
    return pruned


def match_torch_pruning(module: nn.Module, target_macs: int, path: Path) -> dict[str, Any]:
    """Bisect Torch-Pruning's ratio until its export has `target_macs` within MACS_TOLERANCE
    (starting at our own rate, which is usually close). Writes the best export to `path`."""
    import torch_pruning as tp

    low, high, ratio = 0.0, 0.95, RATE
    best: dict[str, Any] | None = None
    for step in range(1, 13):
        pruned = torch_prune(module, ratio)
        export_legacy(pruned, torch.zeros(SHAPE), path)
        costs = onnx_costs(path)
        error = costs["macs"] / target_macs - 1
        if best is None or abs(error) < abs(best["macs_error"]):
            tp_macs, tp_params = tp.utils.count_ops_and_params(pruned, torch.zeros(SHAPE))
            best = {**costs, "ratio": ratio, "macs_error": error, "found_at_step": step,
                    "tp_count_macs": int(tp_macs), "tp_count_params": int(tp_params)}
            best_bytes = path.read_bytes()
        if abs(error) <= MACS_TOLERANCE:
            break
        low, high = (ratio, high) if error > 0 else (low, ratio)
        ratio = (low + high) / 2
    assert best is not None
    path.write_bytes(best_bytes)
    best["steps_tried"] = step
    return best


def ort_layout(path: Path, threads: int, folder: Path) -> dict[str, int]:
    """What ONNX Runtime's optimizer made of the graph: convolutions in the blocked NCHWc
    layout (MLAS's direct kernels) against plain ones (im2col + GEMM), and layout reorders."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    optimized = folder / f"{path.stem}.optimized.onnx"
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter((node.domain or "ai.onnx", node.op_type) for node in onnx.load(str(optimized)).graph.node)
    optimized.unlink()
    return {
        "nchwc_convs": ops[("com.microsoft.nchwc", "Conv")],
        "plain_convs": ops[("ai.onnx", "Conv")] + ops[("com.microsoft", "FusedConv")],
        "reorders": ops[("com.microsoft.nchwc", "ReorderInput")] + ops[("com.microsoft.nchwc", "ReorderOutput")],
    }


def ort_profile(path: Path, threads: int, runs: int) -> dict[str, Any]:
    """One profiled session at batch 1 (after 3 untimed runs): the share of kernel time per
    operator type and per kind of convolution, and the MACs the kernels really executed per
    image (the profile reports the shapes the kernels ran on: NCHWc pads channels to its block)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)}
    warmup = 3
    for _ in range(warmup + runs):
        session.run(None, feed)
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
               and e["ts"] >= starts[warmup]]
    ops: collections.Counter[str] = collections.Counter()
    convs: collections.Counter[str] = collections.Counter()
    executed = 0
    for event in kernels:
        args = event["args"]
        ops[args["op_name"]] += event["dur"]
        shapes = [next(iter(t.values())) for t in args.get("input_type_shape", [])]
        out = [next(iter(t.values())) for t in args.get("output_type_shape", [])]
        if args["op_name"] in ("Conv", "FusedConv") and len(shapes) > 1 and out:
            data, weight = shapes[0], shapes[1]
            convs[conv_kind(weight, data[1])] += event["dur"]
            executed += int(np.prod(out[0])) * int(np.prod(weight[1:]))
        elif args["op_name"] == "Gemm" and shapes and out:
            executed += int(np.prod(out[0])) * shapes[0][-1]
    whole = sum(ops.values()) or 1
    return {
        "op_share": {op: round(us / whole, 4) for op, us in ops.most_common()},
        "conv_share": {kind: round(us / whole, 4) for kind, us in convs.most_common()},
        "executed_macs": executed // runs,
        "ms_per_run": round(whole / runs / 1000, 3),
    }


def prepare_network(name: str, folder: Path, round_tos: list[int], tp_version: str | None) -> dict[str, Any]:
    """Export, prune every way, and count: the variants' paths and costs. A round_to variant
    with the same weight shapes as plain `ours` is the same model: marked `same_as`, not timed."""
    torch.manual_seed(0)
    module = builders.randomize_bn(NETWORKS[name](), seed=0).eval()
    original = folder / f"{name}.onnx"
    export_legacy(module, torch.zeros(SHAPE), original)
    variants: dict[str, dict[str, Any]] = {"original": {"path": original, **onnx_costs(original)}}
    for round_to in [1, *round_tos]:
        label = "ours" if round_to == 1 else f"ours_r{round_to}"
        path = folder / f"{name}_{label}.onnx"
        start = time.perf_counter()
        apply(original, rate=RATE, granularity="group", round_to=round_to, output=path)
        variants[label] = {"path": path, "apply_s": round(time.perf_counter() - start, 2), **onnx_costs(path)}
        if round_to > 1 and variants[label]["signature"] == variants["ours"]["signature"]:
            variants[label]["same_as"] = "ours"
    if tp_version is not None:
        path = folder / f"{name}_torch_pruning.onnx"
        start = time.perf_counter()
        variants["torch_pruning"] = match_torch_pruning(module, variants["ours"]["macs"], path)
        variants["torch_pruning"].update(path=path, match_s=round(time.perf_counter() - start, 2),
                                         same_shapes_as_ours=variants["torch_pruning"]["signature"] == variants["ours"]["signature"])
    base = variants["original"]
    for variant in variants.values():
        variant["macs_ratio"] = base["macs"] / variant["macs"]
        variant["params_ratio"] = base["params"] / variant["params"]
        variant["activations_ratio"] = base["activations"] / variant["activations"]
        variant["macs_ratio_by_kind"] = {kind: base["macs_by_kind"][kind] / macs
                                         for kind, macs in variant["macs_by_kind"].items() if macs}
        del variant["signature"]
    return variants


def time_network(variants: dict[str, dict[str, Any]], threads: int, plan: dict[int, tuple[int, int]]) -> str:
    """One alternating bench run per batch size over the distinct variants; adds p50 and
    speed-ups to each. Returns the device name that bench reports."""
    labels = [label for label, variant in variants.items() if "same_as" not in variant]
    paths = [str(variants[label]["path"]) for label in labels]
    for batch, (warmup, runs) in plan.items():
        result = bench(paths, provider="cpu", batches=(batch,), threads=threads, warmup=warmup, runs=runs)
        p50 = {entry.model: entry.p50_ms for entry in result.entries}
        ratios = {ratio.model: ratio for ratio in result.ratios}
        for label, path in zip(labels, paths):
            variants[label].setdefault("timing", {})[batch] = {
                "runs": runs, "warmup": warmup, "p50_ms": round(p50[path], 3),
                "speedup_paired": 1 / ratios[path].paired_ratio, "speedup_p50": 1 / ratios[path].p50_ratio,
                "gmacs_per_s": variants[label]["macs"] * batch / p50[path] / 1e6,
            }
    return result.device


def verdicts(variants: dict[str, dict[str, Any]], batch: int) -> dict[str, Any]:
    """Ours against 0.9 x its MACs ratio, and against Torch-Pruning's speed-up."""
    ours = variants["ours"]
    speedup = ours["timing"][batch]["speedup_paired"]
    target = 0.9 * ours["macs_ratio"]
    tp = variants.get("torch_pruning")
    tp_speedup = tp["timing"][batch]["speedup_paired"] if tp else None
    return {"speedup": speedup, "target": target, "met_macs": speedup >= target, "torch_pruning_speedup": tp_speedup,
            "ours_over_torch_pruning": None if tp is None else speedup / tp_speedup,
            "met_torch_pruning": None if tp is None else speedup >= tp_speedup,
            "torch_pruning_same_shapes": None if tp is None else tp["same_shapes_as_ours"]}


def _against_torch_pruning(verdict: dict[str, Any]) -> str:
    """yes/NO, flagged when both tools built the same architecture (the gap is then noise)."""
    if verdict["met_torch_pruning"] is None:
        return "n/a"
    word = "yes" if verdict["met_torch_pruning"] else "NO"
    return f"{word} (same shapes: noise)" if verdict["torch_pruning_same_shapes"] else word


def _speedup(variants: dict[str, dict[str, Any]], label: str, batch: int) -> str:
    variant = variants[label]
    if "same_as" in variant:
        return f"= {variant['same_as']}"
    return f"{variant['timing'][batch]['speedup_paired']:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The verdict table, then one row per distinct model with its costs, the MACs ONNX Runtime
    really executed, its graph layout and where its time goes."""
    round_tos = report["round_to"]
    head = ["model", "batch", "MACs ratio", "speed-up ours"] + [f"speed-up r{r}" for r in round_tos]
    head += ["TP MACs ratio", "TP speed-up", "ours / TP", "target 0.9 x MACs", "met (>= target)", "met (>= TP)"]
    lines = [f"B2: ONNX Runtime {report['onnxruntime']} CPU, {report['threads']} intra-op threads, {report['device']}",
             f"load average (1, 5, 15 min): start {report['loadavg_start']}, end {report['loadavg_end']}",
             "speed-up = 1 / median of per-pair latency ratios pruned/original (alternating runs)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, network in report["networks"].items():
        variants = network["variants"]
        tp = variants.get("torch_pruning")
        for batch, verdict in network["verdicts"].items():
            row = [name, str(batch), f"{variants['ours']['macs_ratio']:.2f}", f"{verdict['speedup']:.2f}"]
            row += [_speedup(variants, f"ours_r{r}", batch) for r in round_tos]
            if tp:
                row += [f"{tp['macs_ratio']:.2f}", f"{verdict['torch_pruning_speedup']:.2f}",
                        f"{verdict['ours_over_torch_pruning']:.2f}"]
            else:
                row += ["n/a"] * 3
            row += [f"{verdict['target']:.2f}", "yes" if verdict["met_macs"] else "NO", _against_torch_pruning(verdict)]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Per model: MACs ratio overall and per kind of conv; activations ratio = node-output elements per "
              "image, original / this; executed MACs = from the shapes the kernels ran on (NCHWc pads channels "
              "to its block); GMAC/s = counted MACs x batch / p50.", "",
              "| model | variant | params | MACs | MACs ratio (pointwise / spatial / depthwise) "
              "| activations ratio | executed MACs (b1 profile) | p50 b1 (ms) | p50 b32 (ms) | GMAC/s b1 | GMAC/s b32 "
              "| NCHWc / plain convs, reorders | time share at b1 (pointwise / spatial / depthwise conv, other) |",
              "|" + "---|" * 13]
    kinds = ("pointwise", "spatial", "depthwise")
    for name, network in report["networks"].items():
        for label, v in network["variants"].items():
            if "same_as" in v:
                continue
            t, layout, profile = v["timing"], v["layout"], v["profile_b1"]
            by_kind = " / ".join(f"{v['macs_ratio_by_kind'][k]:.2f}" if k in v["macs_ratio_by_kind"] else "-"
                                 for k in kinds)
            shares = [profile["conv_share"].get(kind, 0.0) for kind in kinds]
            split = " / ".join(f"{share:.0%}" for share in shares) + f", {1 - sum(shares):.0%}"
            cells = [name, label, f"{v['params']:,}", f"{v['macs'] / 1e6:,.0f}M",
                     f"{v['macs_ratio']:.2f} ({by_kind})", f"{v['activations_ratio']:.2f}",
                     f"{profile['executed_macs'] / 1e6:,.0f}M (+{profile['executed_macs'] / v['macs'] - 1:.0%})"]
            cells += [f"{t[b]['p50_ms']:.1f}" for b in (1, 32)] + [f"{t[b]['gmacs_per_s']:.1f}" for b in (1, 32)]
            cells += [f"{layout['nchwc_convs']} / {layout['plain_convs']}, {layout['reorders']}", split]
            lines.append("| " + " | ".join(cells) + " |")
    if report["torch_pruning"] is None:
        lines += ["", "Torch-Pruning not installed (`pip install --no-deps torch-pruning`): no comparison."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    tp_version = torch_pruning_version()
    plan = {1: (args.warmup1, args.runs1), 32: (args.warmup32, args.runs32)}
    networks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        for name in args.models:
            start = time.perf_counter()
            variants = prepare_network(name, folder, args.round_to, tp_version)
            device = time_network(variants, args.threads, plan)
            for variant in variants.values():
                if "same_as" not in variant:
                    variant["layout"] = ort_layout(variant["path"], args.threads, folder)
                    variant["profile_b1"] = ort_profile(variant["path"], args.threads, args.profile_runs)
                variant["path"] = variant["path"].name
            networks[name] = {"variants": variants, "verdicts": {b: verdicts(variants, b) for b in plan},
                              "seconds": round(time.perf_counter() - start, 1)}
    return {
        "benchmark": "B2",
        "what": f"ORT CPU latency, uniform rate {RATE}, group granularity, vs MACs ratio and Torch-Pruning at equal MACs",
        "device": device, "threads": args.threads, "onnxruntime": ort.__version__, "torch": torch.__version__,
        "torch_pruning": tp_version, "round_to": args.round_to, "loadavg_start": loadavg_start,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()], "networks": networks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs1", type=int, default=100)
    parser.add_argument("--warmup1", type=int, default=5)
    parser.add_argument("--runs32", type=int, default=20)
    parser.add_argument("--warmup32", type=int, default=2)
    parser.add_argument("--round-to", type=int, nargs="*", default=[8, 16], help="extra round_to variants of ours")
    parser.add_argument("--profile-runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "b2.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "b2.md").write_text(table)
    print(table)
    print(f"written {args.out / 'b2.json'} and {args.out / 'b2.md'}")


if __name__ == "__main__":
    main()
