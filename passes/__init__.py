"""ONNX -> ONNX rewrites (installed as onnxwootz.passes): canonicalization, channel-group
analysis, filter pruning, block slicing, BatchNorm folding. Each pass has one job.

What is known about each op kind (its channel rule, slicer, MACs, parameter inputs, filter
layout, BatchNorm-fold and refit roles) is declared once, in the op registry (ops.py); the
passes and cost models read it there. To support a new op, add one registry entry and its
torch converter (runtime/torch_ops.OPS); tests/test_op_registry.py checks the two agree."""
