"""A deployment pipeline step: prune a model, gate on accuracy and latency, publish.

    python examples/deploy_pipeline.py models/digits_resnet.onnx --deploy-dir deploy/ --min-speedup 1.1

Exits non-zero (onnxwootz.core.errors.GateError, exit code 6) when the pruned model misses the
accuracy bound or is not faster than the original by --min-speedup on the target provider;
otherwise copies the chosen model to DEPLOY_DIR/model.onnx (atomically) with a JSON record."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnxwootz
from onnxwootz.core.atomic import write_bytes, write_json
from onnxwootz.core.errors import GateError, WootzError


def run(model: str, deploy_dir: str, min_speedup: float, provider: str = "cpu", **prune_options) -> dict:
    pruned = onnxwootz.prune(model, **prune_options)
    if pruned.model is None:
        raise GateError(f"no candidate met '{pruned.constraint}' (teacher accuracy {pruned.teacher_accuracy:.4f})")
    timing = onnxwootz.bench([model, pruned.model], provider=provider, batches=(1,), warmup=5, runs=30)
    ratio = next(r.paired_ratio for r in timing.ratios if r.batch == 1)  # pruned p50 / original p50
    speedup = 1.0 / ratio
    record = {"source": model, "accuracy": pruned.accuracy, "teacher_accuracy": pruned.teacher_accuracy,
              "params": pruned.params, "teacher_params": pruned.teacher_params, "speedup": speedup,
              "provider": provider}
    if speedup < min_speedup:
        raise GateError(f"pruned model is {speedup:.2f}x as fast as the original on {provider}; "
                        f"the gate asks for {min_speedup:.2f}x")
    target = Path(deploy_dir)
    write_bytes(target / "model.onnx", Path(pruned.model).read_bytes())
    write_json(target / "model.json", record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--deploy-dir", required=True)
    parser.add_argument("--min-speedup", type=float, default=1.0)
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--run-dir")
    parser.add_argument("--candidates", type=int)
    parser.add_argument("--pretrain-steps", type=int)
    parser.add_argument("--finetune-steps", type=int)
    parser.add_argument("--constraint")
    args = parser.parse_args(argv)
    try:
        record = run(args.model, args.deploy_dir, args.min_speedup, args.provider, run_dir=args.run_dir,
                     candidates=args.candidates, pretrain_steps=args.pretrain_steps,
                     finetune_steps=args.finetune_steps, constraint=args.constraint)
    except WootzError as exc:
        print(f"gate failed: {exc}" if isinstance(exc, GateError) else f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
