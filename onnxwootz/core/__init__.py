"""The floor everything stands on: errors (one hierarchy, mapped to exit codes), model I/O,
small ONNX helpers, typed results, progress and atomic writes. It imports nothing else of
onnxwootz, so passes/, runtime/ and the library can all use it without cycles."""
