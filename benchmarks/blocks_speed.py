"""How long `onnxwootz blocks CONFIGS.json --json` takes on a paper-sized subspace (500
configurations of 50 units, rates {0, .3, .5, .7}), end to end in a fresh process, next to
the cost of merely starting the command (`onnxwootz --help`), so that the share due to block
identification is visible. Runs alternate between the commands (drift hits all alike); one
untimed warm-up each; median of the repeats.

    python -m benchmarks.blocks_speed [--repeats 5]

Writes bench-results/blocks_speed.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_CONFIGS, N_UNITS, RATES = 500, 50, (0.0, 0.3, 0.5, 0.7)
_ENTRY = "from onnxwootz.cli import main; main()"  # what the `onnxwootz` console script runs


def _run(args: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _ENTRY, *args], capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"onnxwootz {' '.join(args)} failed: {done.stderr.decode().strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-results/blocks_speed.json"))
    options = parser.parse_args()

    rng = random.Random(0)
    configs = [[rng.choice(RATES) for _ in range(N_UNITS)] for _ in range(N_CONFIGS)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "CONFIGS.json"
        path.write_text(json.dumps(configs))
        commands = {
            "startup (--help)": ["--help"],
            "blocks sequitur --json": ["blocks", str(path), "--json"],
            "blocks per-unit --json": ["blocks", str(path), "--strategy", "per-unit", "--json"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for name, args in commands.items():
            _run(args)  # warm-up: file-system caches, .pyc files
        for _ in range(options.repeats):
            for name, args in commands.items():
                times[name].append(_run(args))

    startup = statistics.median(times["startup (--help)"])
    rows = [{"command": name, "median_s": statistics.median(runs), "runs_s": runs,
             "ratio_to_startup": statistics.median(runs) / startup} for name, runs in times.items()]
    print(f"{N_CONFIGS} configurations x {N_UNITS} units, median of {options.repeats} runs")
    print(f"{'command':<26}{'median s':>10}{'x startup':>11}")
    for row in rows:
        print(f"{row['command']:<26}{row['median_s']:>10.3f}{row['ratio_to_startup']:>11.2f}")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps({
        "benchmark": "blocks_speed", "configs": N_CONFIGS, "units": N_UNITS, "rates": RATES,
        "repeats": options.repeats, "machine": {"python": platform.python_version(), "cpu": platform.processor(),
                                                "cores": os.cpu_count()},
        "target_s": 3.0, "results": rows}, indent=2) + "\n")
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
