"""`report` and `onnxwootz report` on a hand-written run directory (journal and summary as
`prune` writes them, tiny real ONNX teacher and answer): the files, a self-contained HTML page,
numbers that match the journal, the Pareto front, the baseline comparison, JSON = API result,
and a one-line error for a folder that is not a run."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from onnxwootz.cli import app
from onnxwootz.core.errors import BadSpecError
from onnxwootz.events import BlockEvent, TrialEvent
from onnxwootz.reporting import pareto_front, report

TEACHER_ACC = 0.9972
BOUND = TEACHER_ACC - 0.01
# candidate: (params, macs, latency, acc at assembly, final acc, met, curve) per mode, in exploration order
METHOD = [(0, 14120, 1452352, 0.031, 0.1142, 0.8022, False, [[0, 0.1142], [50, 0.6713], [100, 0.8022]]),
          (3, 17010, 1900000, 0.034, 0.3000, 0.7500, False, [[0, 0.3000], [50, 0.7000], [100, 0.7500]]),
          (1, 19897, 2429248, 0.038, 0.4791, 0.9777, False, [[0, 0.4791], [50, 0.9637], [100, 0.9777]]),
          (2, 25674, 3406144, 0.045, 0.8579, 0.9888, True, [[0, 0.8579], [50, 0.9888]])]
BASELINE = [(0, 14120, 1452352, 0.031, 0.2562, 0.7966, False, [[0, 0.2562], [50, 0.6300], [100, 0.7966]]),
            (3, 17010, 1900000, 0.034, 0.2000, 0.7000, False, [[0, 0.2000], [50, 0.6500], [100, 0.7000]]),
            (1, 19897, 2429248, 0.038, 0.2618, 0.9192, False, [[0, 0.2618], [50, 0.9100], [100, 0.9192]]),
            (2, 25674, 3406144, 0.045, 0.8022, 0.9300, False, [[0, 0.8022], [50, 0.9200], [100, 0.9300]]),
            (4, 31000, 3900000, 0.050, 0.8500, 0.9900, True, [[0, 0.8500], [50, 0.9900]])]
TIMING_KEYS = {"latency_p50_ms"}


def conv_net(channels: int) -> onnx.ModelProto:
    """Conv-Relu-Conv on a 1-channel 8x8 image with a dynamic batch."""
    rng = np.random.default_rng(channels)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])
    weights = [numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w1"),
               numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, f"net{channels}", [x], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def write_run(path: Path, mode: str, rows: list[tuple], teacher: Path | str, latency: bool = False,
              model_hash: str = "f4ba0616dd7ecc65", cwd: Path | None = None, run_dir: str | None = None,
              **fields: Any) -> Path:
    """A run directory as `prune` leaves it; the answer path is recorded relative to another
    working directory (as `prune --run-dir runs/x` does), so the report must find it by name.
    `cwd` goes to run.json (newer runs record it), `fields` to the summary."""
    path.mkdir(parents=True)
    spec = {"objective": "min latency" if latency else "min size", "baseline": mode == "baseline"}
    recorded = {"identity": {"model": model_hash, "data": "digits", "spec": spec}}
    (path / "run.json").write_text(json.dumps(recorded if cwd is None else {**recorded, "cwd": str(cwd)}))
    events: list[dict[str, Any]] = [{"event": "teacher", "accuracy": TEACHER_ACC, "seconds": 0.2}]
    if mode == "method":
        events += [BlockEvent(f"blocks/{b}.safetensors", b, [f"{b}(.7)"], loss=0.1, start_loss=0.2, kept_start=False,
                              seconds=2.0).to_event() for b in range(2)]
    trials = []
    for candidate, params, macs, lat, at_assembly, accuracy, met, curve in rows:
        trial = TrialEvent(mode=mode, candidate=candidate, rates=[0.7, 0.5], params=params, macs=macs,
                           latency_ms=lat if latency else None, accuracy_at_assembly=at_assembly, accuracy=accuracy,
                           met=met, steps=curve[-1][0], seconds=1.5, blocks=[0, 1] if mode == "method" else [],
                           curve=curve)
        events.append(trial.to_event())
        trials.append(dataclasses.asdict(trial))
    (path / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (path / "configs.json").write_text(json.dumps([[0.7, 0.5]] * 6))
    answer = next((t for t in trials if t["met"]), None)
    if answer is not None:
        onnx.save(conv_net(2), path / "tiny.pruned.onnx")
    summary = {"schema_version": 1, "teacher": str(teacher),
               "model": f"{run_dir or 'runs/' + path.name}/tiny.pruned.onnx" if answer else None,
               "run_dir": run_dir or f"runs/{path.name}",
               "mode": mode, "objective": spec["objective"], "constraint": "accuracy >= teacher - 0.01",
               "teacher_accuracy": TEACHER_ACC, "bound": BOUND, "accuracy": answer["accuracy"] if answer else None,
               "max_accuracy_drop": 0.01, "params": answer["params"] if answer else None,
               "macs": answer["macs"] if answer else None, "teacher_params": 42698, "teacher_macs": 4493632,
               "candidates": 6, "candidates_tried": len(trials), "blocks": 2 if mode == "method" else 0,
               "blocks_trained": 2 if mode == "method" else 0, "pretrain_seconds": 4.0 if mode == "method" else 0.0,
               "wall_seconds": sum(e["seconds"] for e in events), "trials": trials, **fields}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture()
def teacher(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(conv_net(16), path)
    return path


@pytest.fixture()
def runs(tmp_path: Path, teacher: Path) -> tuple[Path, Path]:
    method = write_run(tmp_path / "tiny", "method", METHOD, teacher)
    baseline = write_run(tmp_path / "tiny-baseline", "baseline", BASELINE, teacher)
    return method, baseline


def journal_trials(run: Path) -> list[TrialEvent]:
    events = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    return [TrialEvent.from_event(e) for e in events if e["event"] == "trial"]


def test_writes_plots_markdown_and_self_contained_html(runs):
    method, _ = runs
    result = report(method)
    out = method / "report"
    names = {"report.md", "report.html", "accuracy_vs_params.png", "accuracy_vs_macs.png", "finetune_curves.png"}
    assert {Path(f).name for f in result.files} == names
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary files left behind
    for name in names - {"report.md", "report.html"}:
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    inlined = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert inlined == {(out / n).read_bytes() for n in ("accuracy_vs_params.png", "accuracy_vs_macs.png",
                                                          "finetune_curves.png")}
    markdown = (out / "report.md").read_text()
    assert all(f"]({n})" in markdown for n in ("accuracy_vs_params.png", "finetune_curves.png"))


def test_numbers_match_the_journal_and_the_files(runs, teacher):
    method, baseline = runs
    result = report(method, output=method / "elsewhere")
    markdown = (method / "elsewhere" / "report.md").read_text()
    trials = journal_trials(method)
    answer = next(t for t in trials if t.met)
    median = statistics.median(t.accuracy_at_assembly for t in trials)
    base_trials = journal_trials(baseline)
    base_median = statistics.median(t.accuracy_at_assembly for t in base_trials)

    assert result.answer == answer.candidate and result.compare == str(baseline)  # found beside the run
    assert [c.candidate for c in result.candidates] == [t.candidate for t in sorted(trials, key=lambda t: t.params)]
    method_row, base_row = result.runs
    assert (method_row.mode, method_row.candidates_tried, method_row.answer_params) == ("method", len(trials),
                                                                                       answer.params)
    assert method_row.median_accuracy_at_assembly == pytest.approx(median)
    assert (base_row.mode, base_row.candidates_tried) == ("baseline", len(base_trials))
    assert base_row.median_accuracy_at_assembly == pytest.approx(base_median)
    assert f"| candidates tried | {len(trials)} of 6 | {len(base_trials)} of 6 |" in markdown
    assert f"| median accuracy at assembly | {median:.4f} | {base_median:.4f} |" in markdown
    assert f"| answer parameters | {answer.params:,} |" in markdown

    teacher_row, answer_row = result.models
    assert teacher_row.file_bytes == teacher.stat().st_size
    assert answer_row.file_bytes == (method / "tiny.pruned.onnx").stat().st_size
    assert (teacher_row.params, answer_row.params) == (42698, answer.params)
    assert teacher_row.latency_p50_ms > 0 and answer_row.latency_p50_ms > 0
    assert f"| parameters | 42,698 | {answer.params:,} | {answer.params / 42698 - 1:+.1%} |" in markdown
    assert f"| file size (bytes) | {teacher_row.file_bytes:,} | {answer_row.file_bytes:,} |" in markdown
    for trial in trials:
        assert (f"| {trial.candidate} | {trial.params:,} | {trial.macs:,} | "
                f"{trial.accuracy_at_assembly:.4f} | {trial.accuracy:.4f} |") in markdown


def test_pareto_front_on_hand_made_points():
    points = [(1, 0.5), (2, 0.4), (2, 0.7), (3, 0.7), (4, 0.9), (5, 0.85), (4, 0.9), (6, 0.95)]
    # (2,.4) loses to (1,.5); (3,.7) to (2,.7); (5,.85) to (4,.9); equal points beat neither
    assert pareto_front(points) == [0, 2, 4, 6, 7]
    assert pareto_front([]) == []
    assert pareto_front([(3, 0.1)]) == [0]


def test_candidates_on_the_front_and_the_latency_plot(tmp_path, teacher):
    run = write_run(tmp_path / "lat", "method", METHOD, teacher, latency=True)
    result = report(run, bench=False)
    # candidate 3 is larger than 0 yet less accurate: off every front
    assert {c.candidate: c.front for c in result.candidates} == {
        0: ["params", "macs", "latency_ms"], 3: [], 1: ["params", "macs", "latency_ms"],
        2: ["params", "macs", "latency_ms"]}
    assert (run / "report" / "accuracy_vs_latency.png").is_file()
    assert result.compare is None and len(result.runs) == 1 and result.device is None
    assert all(row.latency_p50_ms is None for row in result.models)
    assert "Method vs baseline" not in (run / "report" / "report.md").read_text()
    assert "| latency ms |" in (run / "report" / "report.md").read_text()


def test_run_without_an_answer_and_an_explicit_compare(tmp_path, teacher):
    failed = [row[:6] + (False,) + row[7:] for row in METHOD]
    run = write_run(tmp_path / "failed", "method", failed, teacher)
    base = write_run(tmp_path / "base", "baseline", BASELINE, teacher, latency=True)
    result = report(run, compare=base, bench=False)
    assert result.answer is None and [m.role for m in result.models] == ["teacher"]
    assert result.compare == str(base) and [r.mode for r in result.runs] == ["method", "baseline"]
    assert result.notes == [f"{run} and {base} differ in more than the start weights: objective"]
    markdown = (run / "report" / "report.md").read_text()
    assert "No explored candidate met the bound" in markdown and f"Note: {result.notes[0]}" in markdown


def test_compare_with_a_run_of_another_teacher_is_refused(tmp_path, teacher):
    run = write_run(tmp_path / "a", "method", METHOD, teacher)
    other = write_run(tmp_path / "b", "baseline", BASELINE, teacher, model_hash="0000000000000000")
    with pytest.raises(BadSpecError, match="another teacher"):
        report(run, compare=other, bench=False)


def test_json_equals_the_api_result(runs, tmp_path):
    method, _ = runs
    out = CliRunner().invoke(app, ["report", str(method), "-o", str(tmp_path / "cli"), "--json"])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.stdout)
    expected = report(method, output=tmp_path / "cli").to_dict()

    def without_timing(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
        if isinstance(value, list):
            return [without_timing(v) for v in value]
        return value

    assert without_timing(printed) == without_timing(expected)
    assert all(row["latency_p50_ms"] > 0 for row in printed["models"])


def test_cli_renders_tables(runs):
    method, _ = runs
    out = CliRunner().invoke(app, ["report", str(method), "--no-bench"])
    assert out.exit_code == 0, out.output
    assert "report.html" in out.stdout and "25,674" in out.stdout


@pytest.mark.parametrize("make", [
    lambda p: p.mkdir(),
    lambda p: (p.mkdir(), (p / "summary.json").write_text("{}")),
    lambda p: (p.mkdir(), (p / "summary.json").write_text("{not json"), (p / "journal.jsonl").write_text("")),
])
def test_not_a_run_directory_is_one_line_and_exit_4(tmp_path, make):
    folder = tmp_path / "nothing"
    make(folder)
    out = CliRunner().invoke(app, ["report", str(folder)])
    assert out.exit_code == 4
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not an onnxwootz run directory" in lines[0], out.stderr


TEST_FIELDS = {"metric": "top1", "teacher_test_metric": 0.9911, "test_metric": 0.9822,
               "splits": {"train": 1000, "val": 297, "test": 500, "unlabeled": 0},
               "preprocess": {"scale": 0.0625, "layout": "NCHW"}, "input_shape": [1, 8, 8]}


def test_held_out_test_figures_and_splits_are_reported(tmp_path, teacher):
    run = write_run(tmp_path / "tested", "method", METHOD, teacher, **TEST_FIELDS)
    out = CliRunner().invoke(app, ["report", str(run), "--no-bench", "--json"])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.stdout)
    assert printed["metric"] == "top1" and printed["splits"] == TEST_FIELDS["splits"]
    assert [(m["role"], m["accuracy"], m["test_metric"]) for m in printed["models"]] == [
        ("teacher", TEACHER_ACC, 0.9911), ("answer", 0.9888, 0.9822)]
    markdown = (run / "report" / "report.md").read_text()
    assert "| validation top1 | 0.9972 | 0.9888 | -0.0084 |" in markdown
    assert "| test top1 | 0.9911 | 0.9822 | -0.0089 |" in markdown
    assert "Data: train 1,000, validation 297, test 500, unlabeled 0 images of shape 1x8x8." in markdown
    assert "Teacher validation top1 0.9972" in markdown and "validation top1 0.9888, test top1 0.9822." in markdown
    page = (run / "report" / "report.html").read_text()
    assert "<td>test top1</td><td>0.9911</td><td>0.9822</td><td>-0.0089</td>" in page
    assert "validation 297, test 500" in page
    rendered = CliRunner().invoke(app, ["report", str(run), "--no-bench"], env={"COLUMNS": "200"})
    assert rendered.exit_code == 0 and "test top1" in rendered.stdout and "test 500" in rendered.stdout


def test_a_summary_without_test_figures_reports_as_before(runs):
    method, _ = runs
    result = report(method, bench=False)
    assert result.metric is None and result.splits is None
    assert all(row.test_metric is None for row in result.models)
    markdown = (method / "report" / "report.md").read_text()
    assert "| accuracy | 0.9972 | 0.9888 | -0.0084 |" in markdown and "Teacher accuracy 0.9972" in markdown
    assert "| test " not in markdown and "Data:" not in markdown and "validation top1" not in markdown


def test_a_failed_answer_shows_the_teachers_test_figure_alone(tmp_path, teacher):
    failed = [row[:6] + (False,) + row[7:] for row in METHOD]
    run = write_run(tmp_path / "failed", "method", failed, teacher, **{**TEST_FIELDS, "test_metric": None})
    report(run, bench=False)
    assert "| test top1 | 0.9911 | - | - |" in (run / "report" / "report.md").read_text()


def _relative_run(tmp_path: Path, cwd_in_run_json: bool) -> tuple[Path, Path]:
    """A run started in `work` with `prune models/tiny.onnx --run-dir runs/tiny`: both paths in
    its summary are relative to `work`."""
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    onnx.save(conv_net(16), work / "models" / "tiny.onnx")
    run = write_run(work / "runs" / "tiny", "method", METHOD, "models/tiny.onnx",
                    cwd=work if cwd_in_run_json else None)
    return work, run


@pytest.mark.parametrize("cwd_in_run_json", [True, False])
def test_report_from_another_folder_finds_a_teacher_recorded_as_typed(tmp_path, monkeypatch, cwd_in_run_json):
    work, run = _relative_run(tmp_path, cwd_in_run_json)  # without cwd: inferred from run_dir "runs/tiny"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = report(run)
    assert result.notes == []
    teacher_row, answer_row = result.models
    assert teacher_row.path == str(work / "models" / "tiny.onnx")
    assert teacher_row.file_bytes == (work / "models" / "tiny.onnx").stat().st_size
    assert teacher_row.latency_p50_ms > 0 and answer_row.latency_p50_ms > 0
    assert answer_row.path == str(work / "runs" / "tiny" / "tiny.pruned.onnx")


def test_a_moved_run_without_its_teacher_says_so(tmp_path, monkeypatch):
    _, run = _relative_run(tmp_path, cwd_in_run_json=False)
    moved = tmp_path / "moved"
    run.rename(moved)
    monkeypatch.chdir(tmp_path)
    result = report(moved, bench=False)
    assert result.notes == ["teacher file models/tiny.onnx not found: no file size or latency for it"]
    assert result.models[1].file_bytes == (moved / "tiny.pruned.onnx").stat().st_size  # found by name


def test_a_candidate_run_twice_counts_once(runs):
    """A met candidate re-run because its answer file was lost: the latest trial stands."""
    method, _ = runs
    trials = journal_trials(method)
    rerun = dataclasses.replace(trials[-1], accuracy=0.9890, seconds=2.5)
    with open(method / "journal.jsonl", "a") as handle:
        handle.write(json.dumps(rerun.to_event()) + "\n")
    result = report(method, bench=False)
    assert [c.candidate for c in result.candidates] == [t.candidate for t in sorted(trials, key=lambda t: t.params)]
    assert result.runs[0].candidates_tried == len(trials)
    assert {c.candidate: c.accuracy for c in result.candidates}[rerun.candidate] == 0.9890
