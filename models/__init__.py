"""Reference CNNs for tests and benchmarks, and the bundled teacher model."""
