"""`report`: what a `prune` run found, for people. Reads a run directory (summary, journal),
plots every explored candidate against its size with the Pareto front, the fine-tuning curves
of the method against the baseline, measures the teacher against the answer, and writes one
Markdown and one self-contained HTML page (plots inlined) so the page can be mailed or archived."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
import statistics
from pathlib import Path
from typing import Any, Sequence

from onnxwootz.core.atomic import write_bytes, write_text
from onnxwootz.core.errors import BadSpecError
from onnxwootz.events import TrialEvent
from onnxwootz.journal import JOURNAL_FILE, RUN_FILE, latest, read_events
from onnxwootz.core.progress import NULL_PROGRESS, Progress
from onnxwootz.core.results import Result

AXES = {"params": "parameters", "macs": "MACs", "latency_ms": "latency p50 (ms)"}
BENCH_RUNS, BENCH_WARMUP = 30, 5
MODE_COLORS = {"method": "#1f77b4", "baseline": "#ff7f0e"}
CURVE_LABELS = {"method": "blocks pre-trained (method)", "baseline": "L1-pruned start (baseline)"}
BOUND_COLOR = "#d62728"
MAX_CURVE_PANELS = 24


@dataclasses.dataclass
class CandidatePoint:
    """One explored candidate of the reported run; `front` lists the axes on whose Pareto front
    (smallest x, highest final accuracy) it lies."""

    candidate: int
    params: int
    macs: int
    latency_ms: float | None
    accuracy_at_assembly: float
    accuracy: float
    met: bool
    steps: int
    seconds: float
    front: list[str]


@dataclasses.dataclass
class ModelRow:
    """The teacher or the answer: validation and held-out test metric (`test_metric` None for
    runs that did not measure it), size, work, bytes on disk and measured latency (batch 1)."""

    role: str
    path: str | None
    accuracy: float | None
    test_metric: float | None
    params: int | None
    macs: int | None
    file_bytes: int | None
    latency_p50_ms: float | None


@dataclasses.dataclass
class RunRow:
    """One run (method or baseline) in the side-by-side comparison."""

    mode: str
    run_dir: str
    candidates: int
    candidates_tried: int
    blocks_trained: int
    pretrain_seconds: float
    wall_seconds: float
    answer_params: int | None
    answer_accuracy: float | None
    median_accuracy_at_assembly: float | None


@dataclasses.dataclass
class ReportResult(Result):
    """What `report` wrote and the numbers in its tables; only latencies change between calls.
    `metric` and `splits` (image counts per split) are None for runs that did not record them."""

    run_dir: str
    output: str
    mode: str
    objective: str
    constraint: str
    metric: str | None
    splits: dict[str, int] | None
    teacher_accuracy: float
    bound: float
    answer: int | None
    provider: str
    device: str | None
    compare: str | None
    candidates: list[CandidatePoint]
    models: list[ModelRow]
    runs: list[RunRow]
    notes: list[str]
    files: list[str]


@dataclasses.dataclass
class _Run:
    """A run directory as read back: its summary, its own trials (journal order), identity and
    the working directory relative paths in the summary are relative to (None: unknown)."""

    path: Path
    summary: dict[str, Any]
    trials: list[TrialEvent]
    identity: dict[str, Any]
    cwd: Path | None

    @property
    def answer(self) -> TrialEvent | None:
        met = [t for t in self.trials if t.met]
        return met[-1] if met and self.summary.get("model") else None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: none has x <= and y >= with one strict
    (x is a cost to minimise, y an accuracy to maximise). Ascending x."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in points)]
    return sorted(front, key=lambda i: (points[i][0], i))


def load_run(path: str | os.PathLike[str]) -> _Run:
    """Read a run directory; a folder that is not one is a BadSpecError."""
    path = Path(path)
    summary_file, journal_file = path / "summary.json", path / JOURNAL_FILE
    if not (summary_file.is_file() and journal_file.is_file()):
        raise BadSpecError(f"{path} is not an onnxwootz run directory (needs summary.json and journal.jsonl "
                           "from a finished `onnxwootz prune`)")
    try:
        summary = json.loads(summary_file.read_text())
        mode = summary["mode"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BadSpecError(f"{path} is not an onnxwootz run directory (its summary.json is not a prune "
                           "summary)") from None
    trials = [TrialEvent.from_event(t) for t in latest(read_events(journal_file), "trial") if t.get("mode") == mode]
    try:
        recorded = json.loads((path / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        recorded = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    cwd = Path(recorded["cwd"]) if isinstance(recorded.get("cwd"), str) else _inferred_cwd(path, summary)
    return _Run(path, summary, trials, recorded.get("identity") or {}, cwd)


def _inferred_cwd(path: Path, summary: dict[str, Any]) -> Path | None:
    """For runs whose run.json has no `cwd`: the folder the summary's relative `run_dir` was
    relative to, when the run directory still sits at that place below it."""
    recorded = Path(str(summary.get("run_dir") or ""))
    if recorded.is_absolute() or not recorded.parts:
        return None
    here = path.resolve()
    tail = len(recorded.parts)
    return here.parents[tail - 1] if here.parts[-tail:] == recorded.parts and tail <= len(here.parents) else None


def report(run_dir: str | os.PathLike[str], compare: str | os.PathLike[str] | None = None,
           output: str | os.PathLike[str] | None = None, bench: bool = True, provider: str = "cpu",
           progress: Progress = NULL_PROGRESS) -> ReportResult:
    """Write report.md, report.html and the plots of one run (and, when given or found at
    `<run_dir>-baseline`, the method-vs-baseline comparison) into `output`."""
    run = load_run(run_dir)
    out = Path(output) if output is not None else run.path / "report"
    notes: list[str] = []
    other = _other_run(run, compare, notes)
    with progress.task("report", total=3) as task:
        models, device = _models(run, bench, provider, notes, progress)
        task.advance(1)
        candidates = _candidates(run)
        images = _plots(run, other, candidates)
        task.advance(1)
        runs = sorted([_run_row(r) for r in (run, other) if r is not None], key=lambda r: r.mode != "method")
        answer = run.answer
        result = ReportResult(
            run_dir=str(run.path), output=str(out), mode=run.summary["mode"], objective=run.summary["objective"],
            constraint=run.summary["constraint"], metric=run.summary.get("metric"),
            splits=run.summary.get("splits"), teacher_accuracy=run.summary["teacher_accuracy"],
            bound=run.summary["bound"], answer=answer.candidate if answer else None, provider=provider,
            device=device, compare=str(other.path) if other else None, candidates=candidates, models=models,
            runs=runs, notes=notes, files=[])
        doc = _document(result, run, list(images))
        files = [write_bytes(out / name, data) for name, data in images.items()]
        files.append(write_text(out / "report.md", _markdown(doc)))
        files.append(write_text(out / "report.html", _html(doc, images)))
        result.files = [str(f) for f in files]
        task.advance(1)
    return result


# -- reading ----------------------------------------------------------------------------------------

def _other_run(run: _Run, compare: str | os.PathLike[str] | None, notes: list[str]) -> _Run | None:
    """The run to compare with: the one given, else `<run_dir>-baseline` when that is a baseline
    run of the same teacher."""
    if compare is not None:
        other = load_run(compare)
        if not _same_teacher(run, other):
            raise BadSpecError(f"{other.path} pruned another teacher than {run.path}; compare runs of one model")
    else:
        guess = run.path.parent / f"{run.path.name}-baseline"
        if run.summary["mode"] != "method" or not guess.is_dir():
            return None
        try:
            other = load_run(guess)
        except BadSpecError as exc:
            notes.append(f"not compared with {guess}: {exc}")
            return None
        if other.summary["mode"] != "baseline" or not _same_teacher(run, other):
            notes.append(f"not compared with {guess}: it is not a baseline run of the same teacher")
            return None
    spec, other_spec = run.identity.get("spec", {}), other.identity.get("spec", {})
    differ = sorted(k for k in set(spec) | set(other_spec) if k != "baseline" and spec.get(k) != other_spec.get(k))
    if differ:
        notes.append(f"{run.path} and {other.path} differ in more than the start weights: {', '.join(differ)}")
    return other


def _same_teacher(run: _Run, other: _Run) -> bool:
    """Both pruned the same teacher bytes, when both recorded it."""
    ours, theirs = run.identity.get("model"), other.identity.get("model")
    return ours is None or theirs is None or ours == theirs


def _candidates(run: _Run) -> list[CandidatePoint]:
    trials = sorted(run.trials, key=lambda t: (t.params, t.candidate))
    fronts = {axis: {trials[i].candidate for i in pareto_front([(getattr(t, axis), t.accuracy) for t in trials])}
              for axis in _axes(trials)}
    return [CandidatePoint(t.candidate, t.params, t.macs, t.latency_ms, t.accuracy_at_assembly, t.accuracy, t.met,
                           t.steps, t.seconds, [axis for axis, members in fronts.items() if t.candidate in members])
            for t in trials]


def _axes(trials: Sequence[TrialEvent | CandidatePoint]) -> list[str]:
    """Size axes to plot: latency only when every trial measured it (the latency objective)."""
    axes = ["params", "macs"]
    if trials and all(t.latency_ms is not None for t in trials):
        axes.append("latency_ms")
    return axes


def _locate(recorded: str | None, run: _Run) -> Path | None:
    """A model path from the summary: a relative one against the run's working directory, then
    as written, else by name inside the run directory (a run dir that was moved)."""
    if not recorded:
        return None
    path = Path(recorded)
    near = [run.cwd / path] if run.cwd is not None and not path.is_absolute() else []
    for candidate in (*near, path, run.path / path.name):
        if candidate.is_file():
            return candidate
    return None


def _file_bytes(path: Path) -> int:
    """Bytes on disk of an ONNX file plus the external-data files it names."""
    import onnx
    from onnx import external_data_helper

    model = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for tensor in external_data_helper._get_all_tensors(model)
                 for entry in tensor.external_data if entry.key == "location"}
    return path.stat().st_size + sum((path.parent / name).stat().st_size for name in locations
                                     if (path.parent / name).is_file())


def _models(run: _Run, bench: bool, provider: str, notes: list[str],
            progress: Progress) -> tuple[list[ModelRow], str | None]:
    summary = run.summary
    teacher, answer = _locate(summary["teacher"], run), _locate(summary.get("model"), run)
    if teacher is None:
        notes.append(f"teacher file {summary['teacher']} not found: no file size or latency for it")
    if summary.get("model") and answer is None:
        notes.append(f"answer file {summary['model']} not found: no file size or latency for it")
    latency: dict[Path, float] = {}
    device = None
    present = [p for p in (teacher, answer) if p is not None]
    if bench and present:
        from onnxwootz.runtime.bench import bench as run_bench

        measured = run_bench(present, provider=provider, batches=(1,), runs=BENCH_RUNS, warmup=BENCH_WARMUP,
                             progress=progress)
        by_label = {entry.model: entry.p50_ms for entry in measured.entries}
        latency = {p: by_label[str(p)] for p in present if str(p) in by_label}
        device = measured.device
    rows = [ModelRow("teacher", str(teacher) if teacher else summary["teacher"], summary["teacher_accuracy"],
                     summary.get("teacher_test_metric"), summary["teacher_params"], summary["teacher_macs"],
                     _file_bytes(teacher) if teacher else None, latency.get(teacher) if teacher else None)]
    if summary.get("model"):
        rows.append(ModelRow("answer", str(answer) if answer else summary["model"], summary["accuracy"],
                             summary.get("test_metric"), summary["params"], summary["macs"],
                             _file_bytes(answer) if answer else None, latency.get(answer) if answer else None))
    return rows, device


def _run_row(run: _Run) -> RunRow:
    summary = run.summary
    at_assembly = [t.accuracy_at_assembly for t in run.trials]
    return RunRow(summary["mode"], str(run.path), summary["candidates"], len(run.trials), summary["blocks_trained"],
                  summary["pretrain_seconds"], summary["wall_seconds"], summary.get("params"), summary.get("accuracy"),
                  statistics.median(at_assembly) if at_assembly else None)


# -- plots ------------------------------------------------------------------------------------------

def _plots(run: _Run, other: _Run | None, candidates: list[CandidatePoint]) -> dict[str, bytes]:
    """PNG bytes by file name. Uses matplotlib's object API (no pyplot), so the caller's
    backend and global figure state are left alone."""
    images = {}
    for axis in _axes(candidates):
        images[_plot_name(axis)] = _tradeoff_plot(run, candidates, axis)
    runs = [r for r in (run, other) if r is not None]
    if any(t.curve for r in runs for t in r.trials):
        images["finetune_curves.png"] = _curves_plot(run, runs)
    return images


def _metric(summary: dict[str, Any]) -> str:
    """The name of the run's metric; runs before metrics were configurable measured accuracy."""
    return summary.get("metric") or "accuracy"


def _plot_name(axis: str) -> str:
    return f"accuracy_vs_{axis.removesuffix('_ms')}.png"


def _figure(width: float = 7.5, height: float = 4.6):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return figure, figure.add_subplot()


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _margin(summary: dict) -> str:
    """How the bound was met: with a noise margin (runs from before margins: nothing said)."""
    margin, confirm = summary.get("bound_margin"), summary.get("confirm_bound")
    held = ("" if confirm is None else
            f"; on the confirmation split: teacher {summary['confirm_teacher_metric']:.4f}, bound {confirm:.4f}")
    return "" if margin is None else f" (met by the value less {margin:g} standard error(s){held})"


def _bound_line(axes, bound: float) -> None:
    axes.axhline(bound, color=BOUND_COLOR, linestyle="--", linewidth=1, label=f"accuracy bound {bound:.4f}")


def _tradeoff_plot(run: _Run, candidates: list[CandidatePoint], axis: str) -> bytes:
    from matplotlib.ticker import EngFormatter

    summary = run.summary
    figure, axes = _figure()
    xs = [getattr(c, axis) for c in candidates]
    axes.vlines(xs, [c.accuracy_at_assembly for c in candidates], [c.accuracy for c in candidates],
                color="#bbbbbb", linewidth=1, zorder=1)
    axes.scatter(xs, [c.accuracy_at_assembly for c in candidates], facecolors="none", edgecolors="#7f7f7f",
                 label="at assembly", zorder=2)
    color = MODE_COLORS.get(summary["mode"], "#1f77b4")
    axes.scatter(xs, [c.accuracy for c in candidates], color=color, label="after fine-tuning", zorder=3)
    for c, x in zip(candidates, xs):
        axes.annotate(str(c.candidate), (x, c.accuracy), textcoords="offset points", xytext=(7, -13), fontsize=8,
                      color="#555555")
    front = [c for c in candidates if axis in c.front]
    axes.plot([getattr(c, axis) for c in front], [c.accuracy for c in front], drawstyle="steps-post", color=color,
              alpha=0.5, linewidth=1.5, label="Pareto front", zorder=2)
    answer = run.answer
    if answer is not None:
        axes.scatter([getattr(answer, axis)], [answer.accuracy], marker="*", s=260, color="#2ca02c",
                     edgecolors="black", linewidths=0.6, label=f"answer (candidate {answer.candidate})", zorder=4)
    teacher_x = {"params": summary["teacher_params"], "macs": summary["teacher_macs"]}.get(axis)
    if teacher_x is not None:
        axes.scatter([teacher_x], [summary["teacher_accuracy"]], marker="D", color="black", label="teacher", zorder=4)
    _bound_line(axes, summary["bound"])
    axes.xaxis.set_major_formatter(EngFormatter(sep="") if axis != "latency_ms" else "{x:.3g}")
    axes.set_xlabel(AXES[axis])
    axes.set_ylabel(f"validation {_metric(summary)}")
    axes.set_title(f"explored candidates ({summary['mode']}): accuracy vs {AXES[axis]}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _png(figure)


def _curves_plot(run: _Run, runs: list[_Run]) -> bytes:
    """One panel with every curve of a single run; with a baseline, one panel per candidate so
    each candidate's method and baseline curves sit side by side on shared axes."""
    bound = run.summary["bound"]
    if len(runs) == 1:
        figure, axes = _figure()
        for trial in run.trials:
            _draw_curve(axes, trial, run.summary["mode"], tag=True)
        _bound_line(axes, bound)
        axes.set(xlabel="fine-tuning step", ylabel=f"validation {_metric(run.summary)}",
                 title="accuracy while fine-tuning each candidate (star: met the bound)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="lower right")
        return _png(figure)

    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    order = list(dict.fromkeys(t.candidate for r in runs for t in r.trials))  # exploration order
    shown = order[:MAX_CURVE_PANELS]
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    figure = Figure(figsize=(2.6 * columns + 0.6, 2.3 * rows + 1.0), dpi=110, layout="constrained")
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(shown):
            axes.set_visible(False)
            continue
        for r in runs:
            for trial in (t for t in r.trials if t.candidate == shown[index]):
                _draw_curve(axes, trial, r.summary["mode"], tag=False)
        axes.axhline(bound, color=BOUND_COLOR, linestyle="--", linewidth=1)
        axes.set_title(f"candidate {shown[index]}", fontsize=9)
        axes.grid(alpha=0.3)
    for column in range(columns):  # the lowest panel of each column carries the x axis
        lowest = grid.flat[column + (len(shown) - 1 - column) // columns * columns]
        lowest.set_xlabel("fine-tuning step")
        lowest.xaxis.set_tick_params(labelbottom=True)
    figure.supylabel(f"validation {_metric(run.summary)}", fontsize=10)
    more = f" (first {len(shown)} of {len(order)} candidates)" if len(order) > len(shown) else ""
    figure.suptitle(f"accuracy while fine-tuning: method vs baseline{more}; star: met the bound")
    handles = [Line2D([], [], color=MODE_COLORS[m], marker="o", markersize=3, label=CURVE_LABELS[m])
               for m in ("method", "baseline")]
    handles.append(Line2D([], [], color=BOUND_COLOR, linestyle="--", label=f"accuracy bound {bound:.4f}"))
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    return _png(figure)


def _draw_curve(axes, trial: TrialEvent, mode: str, tag: bool) -> None:
    """A trial's accuracy curve; in a shared panel (`tag`) its end is tagged with the candidate."""
    if not trial.curve:
        return
    steps, accuracy = zip(*trial.curve)
    color = MODE_COLORS.get(mode, "#7f7f7f")
    first = tag and not any(line.get_label() == CURVE_LABELS.get(mode) for line in axes.get_lines())
    axes.plot(steps, accuracy, marker="o", markersize=3, color=color, alpha=0.8,
              linewidth=2.2 if trial.met else 1.2, label=CURVE_LABELS.get(mode, mode) if first else None)
    if trial.met:
        size = 260 if mode == "method" else 110  # both stay visible where the two land together
        axes.scatter([steps[-1]], [accuracy[-1]], marker="*", s=size, color=color, edgecolors="black",
                     linewidths=0.6, zorder=4 if mode == "baseline" else 3)
    if tag:
        axes.annotate(str(trial.candidate), (steps[-1], accuracy[-1]), textcoords="offset points",
                      xytext=(10 if trial.met else 6, -3), fontsize=8, color=color)


# -- the document -----------------------------------------------------------------------------------

@dataclasses.dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclasses.dataclass
class _Image:
    name: str
    caption: str


Block = str | _Table | _Image  # a str is a paragraph; "## " starts a heading


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _difference(teacher: float | None, answer: float | None) -> str:
    return "-" if teacher is None or answer is None else f"{answer - teacher:+.4f}"


SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test", "unlabeled": "unlabeled",
               "confirm": "confirmation"}


def _splits_line(splits: dict[str, int], input_shape: list[int] | None) -> str:
    """Which images the figures come from: validation picks the answer, test is held out."""
    counts = ", ".join(f"{SPLIT_NAMES.get(name, name)} {count:,}" for name, count in splits.items())
    shape = f" of shape {'x'.join(str(d) for d in input_shape)}" if input_shape else ""
    confirm = (" and must meet the bound on the confirmation images too, which only candidates that met it on "
               "validation are scored on" if "confirm" in splits else "")
    return (f"Data: {counts} images{shape}. The answer is chosen on validation{confirm}; test images take no "
            "part in the search.")


def _change(teacher: float | None, answer: float | None) -> str:
    return "-" if not teacher or answer is None else f"{answer / teacher - 1:+.1%}"


def _document(result: ReportResult, run: _Run, images: list[str]) -> list[Block]:
    summary = run.summary
    name = Path(summary["teacher"]).name.removesuffix(".onnx")
    doc: list[Block] = [f"# onnxwootz report: {name}"]
    metric = _metric(summary)
    validation = "accuracy" if result.metric is None else f"validation {metric}"  # older runs: as they were
    teacher_row = result.models[0]
    answer_row = (result.models[1] if len(result.models) > 1
                  else ModelRow("answer", None, None, None, None, None, None, None))
    if result.answer is None:
        verdict = f"No explored candidate met the bound ({len(result.candidates)} tried)."
    else:
        test = "" if answer_row.test_metric is None else f", test {metric} {answer_row.test_metric:.4f}"
        verdict = (f"Answer: candidate {result.answer}, {summary['params']:,} parameters "
                   f"({1 - summary['params'] / summary['teacher_params']:.1%} fewer than the teacher), "
                   f"{validation} {summary['accuracy']:.4f}{test}.")
    doc.append(f"Run `{result.run_dir}` ({result.mode}): {result.objective} with {result.constraint}. "
               f"Teacher {validation} {result.teacher_accuracy:.4f}, bound {result.bound:.4f}{_margin(summary)}. "
               f"{summary['candidates_tried']} of {summary['candidates']} candidates tried. {verdict}")
    doc += [f"Note: {note}" for note in result.notes]

    doc.append("## Original vs answer")
    latency = f"latency p50, batch 1 ({result.provider}, ms)"
    figures = [(validation, "accuracy")] + ([(f"test {metric}", "test_metric")]
                                            if teacher_row.test_metric is not None else [])
    rows = [[label, _acc(getattr(teacher_row, field)), _acc(getattr(answer_row, field)),
             _difference(getattr(teacher_row, field), getattr(answer_row, field))] for label, field in figures]
    for label, field, fmt in (("parameters", "params", _count), ("MACs", "macs", _count),
                              ("file size (bytes)", "file_bytes", _count),
                              (latency, "latency_p50_ms", lambda v: "-" if v is None else f"{v:.3f}")):
        t, a = getattr(teacher_row, field), getattr(answer_row, field)
        rows.append([label, fmt(t), fmt(a), _change(t, a)])
    doc.append(_Table(["", "teacher", "answer", "change"], rows))
    if result.splits:
        doc.append(_splits_line(result.splits, summary.get("input_shape")))
    if result.device:
        doc.append(f"Latency: median of {BENCH_RUNS} runs after {BENCH_WARMUP} warm-up, one thread, "
                   f"teacher and answer alternating, on {result.device}.")

    if len(result.runs) > 1:
        doc.append("## Method vs baseline")
        doc.append("Same teacher, candidates and fine-tuning budget; the method starts each candidate from "
                   "pre-trained tuning blocks, the baseline from L1-pruned teacher weights.")
        by_metric = [("run directory", lambda r: f"`{r.run_dir}`"),
                     ("candidates tried", lambda r: f"{r.candidates_tried} of {r.candidates}"),
                     ("blocks pre-trained", lambda r: str(r.blocks_trained)),
                     ("pre-training seconds", lambda r: f"{r.pretrain_seconds:.1f}"),
                     ("wall seconds", lambda r: f"{r.wall_seconds:.1f}"),
                     ("answer parameters", lambda r: _count(r.answer_params)),
                     ("answer accuracy", lambda r: _acc(r.answer_accuracy)),
                     ("median accuracy at assembly", lambda r: _acc(r.median_accuracy_at_assembly))]
        doc.append(_Table([""] + [r.mode for r in result.runs],
                          [[label] + [cell(r) for r in result.runs] for label, cell in by_metric]))

    doc.append("## Explored candidates")
    doc.append(f"Candidates are tried in objective order ({result.objective}) and the search stops at the first "
               "that meets the bound; hollow dots are accuracy right after assembly, filled dots after fine-tuning.")
    doc += [_Image(_plot_name(axis), f"accuracy vs {AXES[axis]}") for axis in AXES if _plot_name(axis) in images]
    has_latency = any(c.latency_ms is not None for c in result.candidates)
    header = ["candidate", "params", "MACs"] + (["latency ms"] if has_latency else []) + \
             ["acc. at assembly", "final acc.", "steps", "met", "Pareto (params)", "seconds"]
    doc.append(_Table(header, [
        [str(c.candidate), _count(c.params), _count(c.macs)] + ([f"{c.latency_ms:.3f}"] if has_latency else []) +
        [_acc(c.accuracy_at_assembly), _acc(c.accuracy), str(c.steps), "yes" if c.met else "no",
         "yes" if "params" in c.front else "", f"{c.seconds:.1f}"] for c in result.candidates]))

    if "finetune_curves.png" in images:
        doc.append("## Fine-tuning")
        doc.append(_Image("finetune_curves.png", "accuracy over fine-tuning steps"))

    return doc


def _markdown(doc: list[Block]) -> str:
    parts = []
    for block in doc:
        if isinstance(block, _Table):
            lines = ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, _Image):
            parts.append(f"![{block.caption}]({block.name})")
        else:
            parts.append(block)
    return "\n\n".join(parts) + "\n"


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .35em .7em; text-align: right; }
th { background: #f4f6f8; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f4f4f4; padding: .1em .3em; border-radius: 3px; font-size: .9em; }
figure { margin: 1em 0; }
img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: .85em; }
p.note { color: #8a5a00; }
"""


def _inline(text: str) -> str:
    """Escaped text with `code` spans, the only inline markup the report uses."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _html(doc: list[Block], images: dict[str, bytes]) -> str:
    body = []
    for block in doc:
        if isinstance(block, _Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, _Image):
            data = base64.b64encode(images[block.name]).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        elif block.startswith("# "):
            body.append(f"<h1>{_inline(block[2:])}</h1>")
        elif block.startswith("## "):
            body.append(f"<h2>{_inline(block[3:])}</h2>")
        else:
            css_class = ' class="note"' if block.startswith("Note: ") else ""
            body.append(f"<p{css_class}>{_inline(block)}</p>")
    title = html.escape(doc[0].removeprefix("# ")) if isinstance(doc[0], str) else "onnxwootz report"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
