"""ONNX Runtime sessions with explicit providers, so that what really ran is known."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx

from onnxwootz.core.errors import BadModelError, BadSpecError, DeviceError
from onnxwootz.core.weightfile import is_reference, materialized


def cpu_session(model: onnx.ModelProto | bytes | str, threads: int = 0):
    """An InferenceSession on the CPU provider only (tests, shape discovery, evaluation)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures reach the caller as exceptions; a tried-and-refused size is no news
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if isinstance(model, onnx.ModelProto) and any(is_reference(t) for t in model.graph.initializer):
        model = materialized(model)  # ONNX Runtime cannot read weights left in their files: read them in
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
"""Short provider names the CLI takes, and the ONNX Runtime provider each one means."""


def default_cache_dir() -> Path:
    """Where TensorRT engines are cached, so a second benchmark does not rebuild them."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "onnxwootz" / "tensorrt"


def pinned_session(
    model: onnx.ModelProto | bytes | str,
    provider: str = "cpu",
    threads: int = 1,
    cache_dir: Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A session for timing: pinned intra-op threads, one inter-op thread, sequential execution,
    all graph optimizations, and no silent fallback from a GPU provider to the CPU. Returns the
    session and the options it was made with; a GPU provider that cannot run is a DeviceError."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise BadSpecError(f"unknown provider '{provider}'; choose one of {', '.join(PROVIDERS)}")
    if threads < 1:
        raise BadSpecError(f"threads must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    config: dict[str, str] = {}
    providers: list[Any] = [PROVIDERS[provider]]
    provider_options: dict[str, Any] = {}
    if provider != "cpu":
        config["session.disable_cpu_ep_fallback"] = "1"
    if provider == "tensorrt":
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        provider_options = {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
        # nodes TensorRT does not take run on CUDA, never on the CPU
        providers = [(PROVIDERS[provider], provider_options), PROVIDERS["cuda"]]
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    recorded = {
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": "sequential",
        "graph_optimization_level": "all",
        "config": config,
        "provider_options": provider_options,
    }
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    if provider == "cpu":
        try:
            session = ort.InferenceSession(payload, options, providers=providers)
        except Exception as exc:
            raise BadModelError(f"ONNX Runtime cannot load the model: {_first_line(str(exc))}") from None
        return session, recorded
    return _gpu_session(ort, payload, options, providers, PROVIDERS[provider]), recorded


def _gpu_session(ort: Any, payload: bytes | str, options: Any, providers: list[Any], wanted: str) -> Any:
    """Create a GPU session with ONNX Runtime's own chatter (prints on stdout, logs on the stderr
    descriptor) caught, so a failure is one DeviceError line naming its real cause."""
    with tempfile.TemporaryFile(mode="w+b") as log, contextlib.redirect_stdout(io.StringIO()) as printed:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            session = ort.InferenceSession(payload, options, providers=providers)
            failure = None
        except Exception as exc:
            session, failure = None, _first_line(str(exc))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        chatter = log.read().decode(errors="replace") + printed.getvalue()
    if session is None:
        raise DeviceError(f"{wanted} cannot run here: {_gpu_cause(chatter) or failure}")
    got = session.get_providers()
    if wanted not in got:
        raise DeviceError(f"{wanted} cannot run here: ONNX Runtime gave {', '.join(got)} instead")
    return session


def _gpu_cause(chatter: str) -> str | None:
    """The most telling line of ONNX Runtime's log: a library that failed to load, else a
    provider that failed to start."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in chatter.splitlines()]
    for line in lines:
        match = re.search(r"Failed to load library (\S+) with error: (.+)", line)
        if match:
            return f"cannot load {Path(match.group(1)).name} ({match.group(2).strip()})"
    for line in lines:
        match = re.search(r"(Failed to create \w+\..*?)(?: Please|$)", line)
        if match:
            return match.group(1).strip()
    return None


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else "unknown error"
