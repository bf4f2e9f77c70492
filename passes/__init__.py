"""ONNX -> ONNX rewrites (installed as onnxwootz.passes): canonicalization, channel-group
analysis, filter pruning, block slicing, BatchNorm folding. Each pass has one job."""
