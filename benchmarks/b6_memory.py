"""B6: peak memory and wall time of `analyze` and `apply` on a large model, against a plain
`onnx.load` + `onnx.save` of the same file. Target (BENCHMARKS.md): peak memory at most 2.5x the
model's size.

Each measurement is a fresh Python process that does one job and reports its own peak resident
set size (`ru_maxrss`) and the wall seconds of the job (imports excluded). The model is a
model-zoo graph with random weights (models.zoo), written once to bench-results/b6/.

    python -m benchmarks.b6_memory [--model vgg19] [--rate 0.5] [--out bench-results/b6.json]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from onnxwootz.core.atomic import write_json

RESULTS = Path("bench-results")
JOBS = {
    "load+save": "import onnx\nm = onnx.load(SRC)\nonnx.save(m, DST)",
    "analyze": "import onnxwootz\nonnxwootz.analyze(SRC)",
    "apply": "import onnxwootz\nonnxwootz.apply(SRC, rate=RATE, output=DST)",
}
_WRAPPER = """import json, resource, sys, time
SRC, DST, RATE = sys.argv[1], sys.argv[2], float(sys.argv[3])
{imports}
started = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - started,
                   "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""


def measure(job: str, source: Path, target: Path, rate: float) -> dict[str, float]:
    """Peak RSS and wall seconds of one job in its own process."""
    lines = JOBS[job].splitlines()
    imports = "\n".join(line for line in lines if line.startswith("import"))
    body = "\n".join(line for line in lines if not line.startswith("import"))
    code = _WRAPPER.format(imports=imports, body=body)
    done = subprocess.run([sys.executable, "-c", code, str(source), str(target), str(rate)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS / "b6.json")
    options = parser.parse_args(argv)
    folder = RESULTS / "b6"
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{options.model}.onnx"
    if not source.exists():
        import onnx

        from models.zoo import load_zoo

        onnx.save(load_zoo(options.model), str(source))
    size = source.stat().st_size
    rows = {}
    for job in JOBS:
        figures = measure(job, source, folder / f"{options.model}-{job}.onnx", options.rate)
        rows[job] = {**figures, "peak_vs_size": figures["peak_bytes"] / size}
        print(f"{job:10s} peak {figures['peak_bytes'] / 1e9:.2f} GB ({rows[job]['peak_vs_size']:.2f}x the file), "
              f"{figures['seconds']:.1f} s", flush=True)
    for job in ("analyze", "apply"):
        rows[job]["seconds_vs_load_save"] = rows[job]["seconds"] / rows["load+save"]["seconds"]
    write_json(options.out, {"benchmark": "B6", "model": options.model, "file_bytes": size, "rate": options.rate,
                             "date": time.strftime("%Y-%m-%d"), "rows": rows})


if __name__ == "__main__":
    main()
