"""ONNX Runtime sessions with explicit providers, so that what really ran is known."""

from __future__ import annotations

import onnx


def cpu_session(model: onnx.ModelProto | bytes | str, threads: int = 0):
    """An InferenceSession on the CPU provider only (tests, shape discovery, evaluation)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
