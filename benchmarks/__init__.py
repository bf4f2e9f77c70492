"""On-demand benchmarks (`python -m benchmarks.NAME`): figures, never timed tests."""
