"""`prune` end to end on PaddleOCR's real PP-OCRv4 recognizer (CTC text lines, a Softmax
[N, T, 6625] output, run-time reshapes) with a tiny budget: every stage runs on it (units,
per-unit blocks sliced, refit by least squares and pre-trained, candidates fine-tuned by
distillation of the teacher's outputs) and the result is a valid answer or a clear no-answer."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

import onnxwootz
from benchmarks.tasks.ocr import PREPROCESS, render_rec
from models.ocr import ocr_model
from onnxwootz.core.modelio import load_model
from onnxwootz.core.onnx_helpers import dummy_feed, input_shapes
from onnxwootz.runtime.sessions import cpu_session


def test_prune_runs_on_the_paddleocr_recognizer(tmp_path: Path) -> None:
    render_rec(tmp_path / "lines", n_train=8, n_val=4, n_test=4, seed=0)
    result = onnxwootz.prune(ocr_model("rec"), data=str(tmp_path / "lines"), run_dir=tmp_path / "run",
                             output=tmp_path / "answer.onnx", preprocess=json.dumps(PREPROCESS["rec"]),
                             candidates=2, rates=[0.5], blocks="per-unit", pretrain_steps=2, finetune_steps=2,
                             eval_every=2, batch=2, device="cpu")
    assert result.metric == "text"
    assert 0.0 <= result.teacher_test_metric <= 1.0
    assert result.blocks_trained > 0  # the rate-0.5 candidate's blocks were sliced, refit and trained
    assert len(result.trials) == result.candidates_tried == 2
    if result.model is None:
        assert result.test_metric is None and not (tmp_path / "answer.onnx").exists()
        return
    assert 0.0 <= result.test_metric <= 1.0 and result.accuracy >= result.bound
    answer = load_model(result.model)
    onnx.checker.check_model(answer)
    shape = input_shapes(answer, [2, 3, 48, 320])
    (scores,) = cpu_session(answer).run(None, dummy_feed(answer, shape))
    assert scores.shape[0] == 2 and scores.shape[2] == 6625
