"""Test-wide settings: pytest-xdist runs two workers on two cores, so each worker's torch and
ONNX Runtime use one thread (oversubscribed threads make tiny convs 20x slower)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
