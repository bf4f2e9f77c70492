"""The whole method end to end on the bundled digits teacher, with tiny budgets: the answer is
a valid ONNX model meeting its bound when evaluated independently; a run killed mid-exploration
resumes without losing or redoing finished trials and reaches the same answer; bad data and
bad requests give one clear line and the right exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxwootz
from onnxwootz.context import CONFIRM_SEED_OFFSET
from onnxwootz.core.errors import WootzError
from onnxwootz.data import load_dataset
from onnxwootz.preprocess import Preprocess, accuracy_of
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.spec import Spec

from cli_helpers import CLI, one_clean_line, run_cli

TEACHER = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"
OUT_OF_REACH = "accuracy >= 1.01"
"""A bound no candidate meets (top-1 is at most 1; 0.9999 is met on the 90 images of the digits
validation half once fine-tuning runs long enough), so every candidate is tried."""
TINY = {"candidates": 4, "pretrain_steps": 20, "finetune_steps": 30, "eval_every": 10, "batch": 32}


def _tiny_flags(**extra: str) -> list[str]:
    flags = ["--candidates", "4", "--pretrain-steps", "20", "--finetune-steps", "30"]
    for key, value in extra.items():
        flags += [f"--{key.replace('_', '-')}", value]
    return flags


def _trials(run_dir: Path) -> list[dict]:
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"trial"' in line]


def test_prune_writes_a_model_that_meets_its_bound_independently(tmp_path: Path) -> None:
    result = onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", constraint="accuracy >= teacher - 0.05", **TINY)
    assert result.model is not None and result.candidates_tried >= 1
    model = onnx.load(result.model)
    onnx.checker.check_model(model, full_check=True)
    preprocess = Preprocess.from_model(model)
    whole = load_dataset("digits", preprocess, 10)
    data = whole.with_confirmation(Spec().confirm_fraction, CONFIRM_SEED_OFFSET)
    session = cpu_session(model)
    logits = session.run(None, {model.graph.input[0].name: data.x_val})[0]
    accuracy = float((logits.argmax(1) == data.y_val).mean())
    assert accuracy >= result.bound
    assert abs(accuracy - result.accuracy) < 1e-6
    assert abs(accuracy_of(model) - accuracy) < 1e-5
    confirmed = session.run(None, {model.graph.input[0].name: data.x_confirm})[0]
    assert float((confirmed.argmax(1) == data.y_confirm).mean()) >= result.confirm_bound  # met on both parts
    assert (result.splits["val"], result.splits["confirm"]) == (len(data.x_val), len(data.x_confirm))
    assert len(data.x_val) + len(data.x_confirm) == len(whole.x_val) and len(data.x_confirm) >= len(whole.x_val) // 2
    assert result.params < result.teacher_params
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("teacher", "model", "teacher_accuracy", "accuracy", "max_accuracy_drop", "params", "macs",
                "candidates_tried", "wall_seconds", "schema_version"):
        assert key in summary


def test_lazy_pretraining_trains_each_block_exactly_as_eager_does(tmp_path: Path) -> None:
    """Lazy passes group blocks differently (one pass per candidate reached) from one eager
    pass over all of them; every block must still end with the same weights."""
    from safetensors.numpy import load_file

    unreachable = {**TINY, "candidates": 8, "finetune_steps": 0, "constraint": "accuracy >= 1.0"}
    lazy = onnxwootz.prune(TEACHER, run_dir=tmp_path / "lazy", pretrain="lazy", **unreachable)
    eager = onnxwootz.prune(TEACHER, run_dir=tmp_path / "eager", pretrain="eager", **unreachable)
    assert lazy.candidates_tried == eager.candidates_tried == 8
    files = sorted(path.name for path in (tmp_path / "lazy" / "blocks").iterdir())
    assert files == sorted(path.name for path in (tmp_path / "eager" / "blocks").iterdir()) and len(files) >= 2
    events = [json.loads(line)["event"] for line in (tmp_path / "lazy" / "journal.jsonl").read_text().splitlines()]
    assert "block" in events[events.index("trial"):]  # some blocks waited for a later candidate: another pass
    for name in files:
        trained_lazily, trained_eagerly = load_file(tmp_path / "lazy" / "blocks" / name), load_file(tmp_path / "eager" / "blocks" / name)
        assert trained_lazily.keys() == trained_eagerly.keys()
        for key, value in trained_lazily.items():
            np.testing.assert_array_equal(value, trained_eagerly[key], err_msg=f"{name}:{key}")


def test_baseline_explores_the_same_candidates_without_blocks(tmp_path: Path) -> None:
    bound = OUT_OF_REACH  # every candidate is tried in both modes
    method = onnxwootz.prune(TEACHER, run_dir=tmp_path / "m", constraint=bound, **TINY)
    baseline = onnxwootz.prune(TEACHER, run_dir=tmp_path / "b", constraint=bound, baseline=True, **TINY)
    assert method.model is None and baseline.model is None
    assert [t.rates for t in method.trials] == [t.rates for t in baseline.trials]
    assert all(t.blocks == [] for t in baseline.trials)
    assert method.blocks_trained > 0 and baseline.blocks_trained == 0
    assert [t.params for t in method.trials] == sorted(t.params for t in method.trials)


def test_killed_run_resumes_without_losing_or_redoing_trials(tmp_path: Path) -> None:
    flags = _tiny_flags(constraint=OUT_OF_REACH, finetune_steps="60")
    reference = tmp_path / "reference"
    subprocess.run([CLI, "prune", str(TEACHER), "--run-dir", str(reference), *flags], check=True,
                   capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([CLI, "prune", str(TEACHER), "--run-dir", str(killed), *flags],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (killed / "journal.jsonl").exists() and _trials(killed):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _trials(killed)
    assert 1 <= len(before) < 4
    subprocess.run([CLI, "prune", str(TEACHER), "--run-dir", str(killed), *flags], check=True, capture_output=True)
    after = _trials(killed)
    assert after[:len(before)] == before  # finished trials kept as they were
    assert sorted(t["candidate"] for t in after) == sorted({t["candidate"] for t in after})  # none repeated
    strip = lambda trials: [{k: v for k, v in t.items() if k != "seconds"} for t in trials]  # noqa: E731
    assert strip(after) == strip(_trials(reference))
    done = json.loads((killed / "summary.json").read_text())
    ref = json.loads((reference / "summary.json").read_text())
    assert (done["model"] is None) == (ref["model"] is None) and done["candidates_tried"] == ref["candidates_tried"]


def _npz(path: Path, x_train, y_train, x_val, y_val) -> Path:
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    return path


def test_empty_dataset_is_one_clear_error(tmp_path: Path) -> None:
    empty = np.zeros((0, 8, 8), np.uint8)
    data = _npz(tmp_path / "empty.npz", empty, np.zeros(0, np.int64), empty, np.zeros(0, np.int64))
    result = run_cli("prune", str(TEACHER), "--data", str(data), "--run-dir", str(tmp_path / "r"))
    one_clean_line(result, 3, "empty")


def test_labels_outside_the_models_outputs_are_one_clear_error(tmp_path: Path) -> None:
    x = np.zeros((20, 8, 8), np.uint8)
    data = _npz(tmp_path / "labels.npz", x, np.full(20, 12), x, np.arange(20) % 10)
    result = run_cli("prune", str(TEACHER), "--data", str(data), "--run-dir", str(tmp_path / "r"))
    one_clean_line(result, 3, "label")


def test_images_that_cannot_be_shaped_are_one_clear_error(tmp_path: Path) -> None:
    x = np.zeros((20, 2, 8, 8, 5), np.uint8)
    data = _npz(tmp_path / "rank.npz", x, np.arange(20) % 10, x, np.arange(20) % 10)
    result = run_cli("prune", str(TEACHER), "--data", str(data), "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 3 and "Traceback" not in result.stderr


def test_model_without_dataset_needs_data_flag(tmp_path: Path) -> None:
    model = onnx.load(str(TEACHER))
    for prop in list(model.metadata_props):
        if prop.key == "onnxwootz.dataset":
            model.metadata_props.remove(prop)
    path = tmp_path / "nodata.onnx"
    onnx.save(model, str(path))
    result = run_cli("prune", str(path), "--run-dir", str(tmp_path / "r"))
    one_clean_line(result, 4, "--data")


def test_cuda_without_gpu_is_one_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([CLI, "prune", str(TEACHER), "--device", "cuda", "--run-dir", str(tmp_path / "r"),
                             *_tiny_flags()], capture_output=True, text=True, env=env)
    one_clean_line(result, 5, "cuda")


def test_run_dir_of_another_run_is_refused(tmp_path: Path) -> None:
    onnxwootz.prune(TEACHER, run_dir=tmp_path / "r", constraint="accuracy >= teacher - 0.5", **TINY)
    result = run_cli("prune", str(TEACHER), "--run-dir", str(tmp_path / "r"), *_tiny_flags(seed="3"))
    one_clean_line(result, 4, "different run")



def test_run_dir_whose_units_were_cut_otherwise_is_refused(tmp_path: Path) -> None:
    """Block files are named by (first unit, rates): a run directory from a version that cut
    units or block spans differently must not lend its blocks (its identity holds the plan)."""
    onnxwootz.prune(TEACHER, run_dir=tmp_path / "r", constraint="accuracy >= teacher - 0.5", **TINY)
    run_file = tmp_path / "r" / "run.json"
    recorded = json.loads(run_file.read_text())
    assert len(recorded["identity"]["units"]) == 16
    recorded["identity"]["units"] = "0" * 16
    run_file.write_text(json.dumps(recorded))
    with pytest.raises(WootzError, match="different run"):
        onnxwootz.prune(TEACHER, run_dir=tmp_path / "r", constraint="accuracy >= teacher - 0.5", **TINY)

class _Recorder:
    """A pipeline's own Progress hook: collects task names and advances."""

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.advances = 0

    def task(self, description: str, total: float | None = None):
        from contextlib import contextmanager

        recorder = self

        @contextmanager
        def opened():
            recorder.tasks.append(description)

            class Handle:
                def advance(self, amount: float = 1, **info) -> None:
                    recorder.advances += 1

            yield Handle()

        return opened()


def test_latency_objective_orders_by_measured_latency_and_reports_progress(tmp_path: Path) -> None:
    recorder = _Recorder()
    result = onnxwootz.prune(TEACHER, run_dir=tmp_path / "lat", objective="min latency",
                             constraint=OUT_OF_REACH, progress=recorder, **TINY)
    events = [json.loads(line) for line in (tmp_path / "lat" / "journal.jsonl").read_text().splitlines()]
    latency = {e["candidate"]: e["p50_ms"] for e in events if e["event"] == "latency"}
    assert len(latency) == result.candidates  # measured once per candidate, before any training
    tried = [t.candidate for t in result.trials]
    assert [latency[c] for c in tried] == sorted(latency[c] for c in tried)
    assert all(t.latency_ms == latency[t.candidate] for t in result.trials)
    assert any(name.startswith("exploring") for name in recorder.tasks) and recorder.advances > 0
    again = onnxwootz.prune(TEACHER, run_dir=tmp_path / "lat", objective="min latency",
                            constraint=OUT_OF_REACH, **TINY)
    assert [t.candidate for t in again.trials] == tried  # cached latencies, same order


def test_export_variant_is_checked_and_the_run_restores_threads_and_times_itself(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        started = time.perf_counter()
        result = onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", constraint="accuracy >= teacher - 0.5",
                                 fold_bn=True, opset=14, threads=1, **TINY)
        elapsed = time.perf_counter() - started
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert result.model is not None and 0 < result.wall_seconds <= elapsed
    assert result.wall_seconds >= result.pretrain_seconds + sum(t.seconds for t in result.trials)
    model = onnx.load(result.model)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 14
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teacher"] == str(TEACHER.resolve()) and summary["metric"] == "top1"
    assert summary["test_metric"] == result.test_metric and summary["splits"]["test"] > 0


def test_an_answer_that_fails_its_check_is_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export variant that computes something else (here: a scaled classifier) must stop the
    run before the file exists."""
    import onnxwootz.passes.export as export
    from onnxwootz.passes.graph_index import replace_initializer

    real = export.export_options

    def broken(model, fold_bn=False, opset=None):
        variant = real(model, fold_bn, opset)
        gemm = next(n for n in variant.graph.node if n.op_type == "Gemm")
        weight = next(i for i in variant.graph.initializer if i.name == gemm.input[1])
        replace_initializer(variant, weight.name, 3 * onnx.numpy_helper.to_array(weight))
        return variant

    monkeypatch.setattr(export, "export_options", broken)
    with pytest.raises(RuntimeError, match="disagrees with its torch view"):
        onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", output=tmp_path / "answer.onnx",
                        constraint="accuracy >= teacher - 0.5", fold_bn=True, **TINY)
    assert not (tmp_path / "answer.onnx").exists()


def test_block_weights_scatter_back_into_teacher_shapes() -> None:
    """A trained scalar constant keeps its 0-d shape; a pruned conv's kept filters land at their
    positions, the rest keep the teacher's values."""
    from onnxwootz.blocks_training import scatter as _scatter

    scalar = _scatter(np.array(2.0, np.float32), np.array(3.0, np.float32), [])
    assert scalar.shape == () and float(scalar) == 3.0
    teacher = np.zeros((4, 2), np.float32)
    full = _scatter(teacher, np.ones((2, 2), np.float32), [{"axis": 0, "keep": [1, 3]}])
    np.testing.assert_array_equal(full, [[0, 0], [1, 1], [0, 0], [1, 1]])


def test_profile_subspace_is_measured_once_and_gives_multi_unit_blocks(tmp_path: Path) -> None:
    """`subspace = "profile"`: the configurations come from the teacher's measured per-unit
    sensitivity (journaled, written beside the run), share runs of rates, and Sequitur turns
    those runs into blocks spanning several units; a resumed run measures nothing again."""
    # a bound above the teacher's 1.0, so every candidate is tried
    options = {**TINY, "candidates": 8, "finetune_steps": 0, "constraint": "accuracy >= 1.01", "subspace": "profile"}
    result = onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", **options)
    assert result.candidates == 8 and result.candidates_tried == 8
    sensitivity = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    assert [unit["name"] for unit in sensitivity["units"]] == ["m1", "m2", "m3", "m4"]
    blocks = json.loads((tmp_path / "run" / "blocks.json").read_text())["blocks"]
    assert any(len(block["rates"]) >= 2 for block in blocks)
    onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", **options)
    events = [json.loads(line)["event"] for line in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    assert events.count("sensitivity") == 1


def test_profile_budget_keeps_every_candidates_summed_drops_within_its_multiple_of_the_allowed_drop(
        tmp_path: Path) -> None:
    """`profile_budget`: the drop the constraint allows (teacher - bound, on the profile's
    images) times the budget caps each candidate's summed single-unit drops."""
    options = {**TINY, "candidates": 6, "finetune_steps": 0, "constraint": "accuracy >= teacher - 0.02",
               "subspace": "profile", "profile_budget": 2.0}
    result = onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", **options)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["identity"]["spec"]["profile_budget"] == 2.0
    sensitivity = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    budget = 2.0 * (sensitivity["teacher"] - result.bound)
    configs = json.loads((tmp_path / "run" / "configs.json").read_text())
    rates = sensitivity["rates"]
    for config in configs:
        total = sum(max(0.0, *(d for r, d in zip(rates, unit["drop"]) if r <= rate))
                    for unit, rate in zip(sensitivity["units"], config) if rate)
        assert total <= budget + 1e-9
    assert any(any(config) for config in configs)


def test_fair_baseline_refits_every_candidate_from_the_teacher_without_blocks(tmp_path: Path) -> None:
    """`--baseline --pretrain-init lsq`: the same candidates as the paper's baseline, each
    assembled with its convs refitted by least squares (no block is trained), so they start far
    closer to the teacher than L1-pruned ones."""
    options = {**TINY, "finetune_steps": 0, "constraint": "accuracy >= 1.01", "baseline": True}
    paper = onnxwootz.prune(TEACHER, run_dir=tmp_path / "paper", **options)
    fair = onnxwootz.prune(TEACHER, run_dir=tmp_path / "fair", pretrain_init="lsq", **options)
    assert [t.rates for t in fair.trials] == [t.rates for t in paper.trials]
    assert fair.blocks_trained == 0 and all(not t.blocks for t in fair.trials)
    pruned = [(f.accuracy_at_assembly, p.accuracy_at_assembly) for f, p in zip(fair.trials, paper.trials) if any(f.rates)]
    assert pruned and all(f >= p for f, p in pruned) and sum(f - p for f, p in pruned) > 0.1


def test_a_candidate_that_passes_val_but_not_the_confirmation_split_is_not_the_answer(tmp_path: Path) -> None:
    """A metric that every candidate meets on the validation images and none on the held-out
    confirmation split: nothing is answered, and every look there is journaled; without the
    split the smallest candidate is the answer."""
    whole = load_dataset("digits", Preprocess.from_model(onnx.load(str(TEACHER))), 10)
    confirm_size = len(whole.with_confirmation(Spec().confirm_fraction, CONFIRM_SEED_OFFSET).x_confirm)
    assert confirm_size != len(whole.x_val) - confirm_size

    def passes_val_only(student, teacher, labels) -> float:
        return 0.0 if len(labels) == confirm_size else 1.0

    small = {**TINY, "candidates": 2, "finetune_steps": 20}
    result = onnxwootz.prune(TEACHER, run_dir=tmp_path / "confirmed", metric=passes_val_only,
                             constraint="accuracy >= 0.5", **small)
    assert result.model is None and result.confirm_bound == 0.5 and result.candidates_tried == 2
    assert all(not t.met and t.confirmations and all(look == [0.0, 0.0] for look in t.confirmations)
               for t in result.trials)
    assert all(t.accuracy == 1.0 and t.accuracy_floor < result.bound for t in result.trials)
    unconfirmed = onnxwootz.prune(TEACHER, run_dir=tmp_path / "unconfirmed", metric=passes_val_only,
                                  constraint="accuracy >= 0.5", confirm_fraction=0, **small)
    assert unconfirmed.model is not None and unconfirmed.confirm_bound is None
    assert [t.met for t in unconfirmed.trials] == [True] and unconfirmed.trials[0].confirmations == []
    assert "confirm" not in unconfirmed.splits
