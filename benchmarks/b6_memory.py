"""B6: peak memory and wall time of `analyze` and `apply` on large models, against a plain
`onnx.load` + `onnx.save` of the same file. Targets (issue 16): `apply` peaks at at most 2.5x
the model's size and takes at most 1.5x the time of a load + save, and a model over 2 GiB
stored with external data is pruned the same way (and written with external data).

Each measurement is a fresh Python process that does one job and reports its own peak resident
set size (`ru_maxrss`) and the wall seconds of the job (imports excluded); with --repeat the
least time and the largest peak of the runs are kept (the machine may be shared). The models,
written once to bench-results/b6/: the model-zoo VGG-19 with random weights (models.zoo, 575 MB,
weights embedded) and `vgg19-wide`, the same graph with fc6/fc7 WIDE units wide (2.4 GB, weights
in `vgg19-wide.onnx.data`, generated a block of rows at a time).

    python -m benchmarks.b6_memory [--models vgg19 vgg19-wide] [--rate 0.5] [--repeat 1]
                                   [--out bench-results/b6.json]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from onnxwootz.core.atomic import write_json

RESULTS = Path("bench-results")
JOBS = {
    "load+save": "import onnx\nm = onnx.load(SRC)\nonnx.save(m, DST, save_as_external_data=EXTERNAL, "
                 "location=DST.rsplit('/', 1)[-1] + '.data')",
    "analyze": "import onnxwootz\nonnxwootz.analyze(SRC)",
    "apply": "import onnxwootz\nonnxwootz.apply(SRC, rate=RATE, output=DST)",
}
_WRAPPER = """import json, resource, sys, time
SRC, DST, RATE, EXTERNAL = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
{imports}
started = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - started,
                   "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""
WIDE = 14336
"""fc6 and fc7 units of vgg19-wide (VGG-19 has 4096): 2.4 GB of weights, over protobuf's 2 GiB."""


def measure(job: str, source: Path, target: Path, rate: float, external: bool) -> dict[str, float]:
    """Peak RSS and wall seconds of one job in its own process (writing `target` afresh: onnx
    appends external data to a data file that is there)."""
    for old in (target, target.with_name(target.name + ".data")):
        old.unlink(missing_ok=True)
    lines = JOBS[job].splitlines()
    imports = "\n".join(line for line in lines if line.startswith("import"))
    body = "\n".join(line for line in lines if not line.startswith("import"))
    code = _WRAPPER.format(imports=imports, body=body)
    done = subprocess.run([sys.executable, "-c", code, str(source), str(target), str(rate), str(int(external))],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_wide(path: Path) -> None:
    """vgg19-wide with external data, one block of rows of one weight in memory at a time."""
    import onnx
    from onnx import numpy_helper

    from models.zoo import zoo_path

    light = onnx.load(str(zoo_path("vgg19")))
    shapes = {init.name: numpy_helper.to_array(init).tolist() for init in light.graph.initializer}
    wide = {4096: WIDE}
    rng = np.random.default_rng(0)
    nodes, weights = [], []
    location = path.name + ".data"
    with open(path.parent / location, "wb") as data:
        for node in light.graph.node:
            if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
                nodes.append(node)
                continue
            shape = [wide.get(d, d) for d in shapes[node.input[0]]]
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
            offset = data.tell()
            step = max(1, (1 << 26) // max(int(np.prod(shape[1:])), 1))
            for start in range(0, shape[0], step):
                rows = [min(step, shape[0] - start), *shape[1:]]
                block = rng.standard_normal(rows, dtype=np.float32)
                block *= np.float32(np.sqrt(2.0 / fan_in) if fan_in else 0.1)
                data.write(block.tobytes())
            tensor = onnx.TensorProto(name=node.output[0], dims=shape, data_type=onnx.TensorProto.FLOAT,
                                      data_location=onnx.TensorProto.EXTERNAL)
            for key, value in (("location", location), ("offset", offset), ("length", data.tell() - offset)):
                tensor.external_data.add(key=key, value=str(value))
            weights.append(tensor)
    used = {name for node in nodes for name in node.input}
    del light.graph.node[:]
    light.graph.node.extend(nodes)
    kept = [init for init in light.graph.initializer if init.name in used]
    del light.graph.initializer[:]
    light.graph.initializer.extend(kept + weights)
    names = {init.name for init in light.graph.initializer}
    real = [value for value in light.graph.input if value.name not in names and value.name not in shapes]
    del light.graph.input[:]
    light.graph.input.extend(real)
    light.ir_version = max(light.ir_version, 4)
    onnx.save(light, str(path))


def source_model(name: str, folder: Path) -> Path:
    source = folder / f"{name}.onnx"
    if source.exists():
        return source
    if name == "vgg19-wide":
        _write_wide(source)
    else:
        import onnx

        from models.zoo import load_zoo

        onnx.save(load_zoo(name), str(source))
    return source


def _size(source: Path) -> int:
    data = source.with_name(source.name + ".data")
    return source.stat().st_size + (data.stat().st_size if data.exists() else 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg19", "vgg19-wide"])
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "b6.json")
    options = parser.parse_args(argv)
    folder = RESULTS / "b6"
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in options.models:
        source = source_model(name, folder)
        size, external = _size(source), source.with_name(source.name + ".data").exists()
        rows = {}
        for job in JOBS:
            runs = [measure(job, source, folder / f"{name}-{job}.onnx", options.rate, external)
                    for _ in range(options.repeat)]
            figures = {"seconds": min(r["seconds"] for r in runs), "peak_bytes": max(r["peak_bytes"] for r in runs)}
            rows[job] = {**figures, "peak_vs_size": figures["peak_bytes"] / size}
            print(f"{name:11s} {job:10s} peak {figures['peak_bytes'] / 1e9:.2f} GB ({rows[job]['peak_vs_size']:.2f}x "
                  f"the model), {figures['seconds']:.1f} s", flush=True)
        for job in ("analyze", "apply"):
            rows[job]["seconds_vs_load_save"] = rows[job]["seconds"] / rows["load+save"]["seconds"]
        written = folder / f"{name}-apply.onnx"
        rows["apply"]["wrote_external_data"] = written.with_name(written.name + ".data").exists()
        print(f"{name:11s} apply/load+save time {rows['apply']['seconds_vs_load_save']:.2f}x, "
              f"external data written: {rows['apply']['wrote_external_data']}", flush=True)
        results[name] = {"model_bytes": size, "external_data": external, "rows": rows}
    write_json(options.out, {"benchmark": "B6", "rate": options.rate, "repeat": options.repeat,
                             "date": time.strftime("%Y-%m-%d"), "models": results})


if __name__ == "__main__":
    main()
