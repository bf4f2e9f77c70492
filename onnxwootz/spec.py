"""The pruning spec: every knob of `onnxwootz prune`, with defaults, loadable from TOML and
overridable from the command line. Objective and constraint use the paper's form:
`min size|macs|latency` and `accuracy >= teacher - 0.01` or `accuracy >= 0.95`, where the
constraint may name its metric instead of `accuracy` (`map_iou >= 0.9`; onnxwootz.metrics):
`accuracy` always means the run's chosen metric."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxwootz.core.errors import BadSpecError

if TYPE_CHECKING:
    from onnxwootz.runtime.training import FinetuneConfig, PretrainConfig

OBJECTIVES = ("size", "macs", "latency")
CHOICES = {
    "subspace": ("spread", "profile"),
    "profile_init": ("l1", "lsq"),
    "blocks": ("sequitur", "per-unit"),
    "pretrain": ("lazy", "eager"),
    "pretrain_init": ("lsq", "l1"),
    "finetune_loss": ("ce", "kd"),
    "finetune_bn": ("batch", "frozen"),
    "device": ("auto", "cpu", "cuda"),
}
"""The spec fields that take one of a few words, and those words."""
_OPTIONAL = {"finetune_loss", "pretrain_init"}
"""Of those, the ones whose None means "chosen from the rest of the spec"."""
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_]\w*(?:@[0-9]*\.?[0-9]+)?)\s*>=\s*(?:(teacher)\s*-\s*)?([0-9]*\.?[0-9]+)\s*$")
ANY_METRIC = "accuracy"
"""The constraint's word for whichever metric the run uses."""


@dataclasses.dataclass(frozen=True)
class Constraint:
    """METRIC >= teacher - drop (relative) or METRIC >= bound (absolute); METRIC is `accuracy`
    (the run's metric, whatever it is) or a metric's name."""

    relative: bool
    value: float
    metric: str = ANY_METRIC

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        from onnxwootz.metrics import parse_metric_name

        match = _CONSTRAINT.match(text)
        if not match:
            raise BadSpecError(f"constraint must read 'accuracy >= teacher - 0.01' or 'accuracy >= 0.95' (or name "
                               f"the metric: 'map_iou >= 0.9'), got '{text}'")
        metric = match.group(1)
        if metric != ANY_METRIC:
            parse_metric_name(metric)
        return cls(relative=bool(match.group(2)), value=float(match.group(3)), metric=metric)

    def bound(self, teacher_accuracy: float) -> float:
        return teacher_accuracy - self.value if self.relative else self.value

    def __str__(self) -> str:
        return (f"{self.metric} >= teacher - {self.value:g}" if self.relative
                else f"{self.metric} >= {self.value:g}")


@dataclasses.dataclass
class Spec:
    rates: list[float] = dataclasses.field(default_factory=lambda: [0.3, 0.5, 0.7])
    candidates: int = 16
    configs: str | None = None
    granularity: str = "module"
    objective: str = "min size"
    constraint: str = "accuracy >= teacher - 0.01"
    bound_margin: float = 1.0  # z: the validation metric less z bootstrap standard errors must reach the bound
    confirm_fraction: float = 0.5  # of the val images, held out to confirm a candidate that passed on the rest; 0: off
    subspace: str = "spread"  # sizes spread (the paper's sampling) or around the measured sensitivity profile
    profile_init: str = "l1"  # the profile's pruned units: plain L1, or with their block's least-squares start
    profile_budget: float | None = None  # summed single-unit drops per profile candidate, x the allowed drop; None: any
    blocks: str = "sequitur"
    pretrain: str = "lazy"
    pretrain_init: str | None = None  # start: lsq (refit the readers of pruned channels) or l1; None: see start()
    pretrain_steps: int = 300
    pretrain_lr: float = 1e-2  # with the warm-up and the least-squares start; measured best on both tasks
    pretrain_weight_decay: float = 1e-4
    finetune_steps: int = 300
    finetune_loss: str | None = None  # ce: labels; kd: distil every teacher output; None: see loss()
    finetune_bn: str = "batch"  # BatchNorm while fine-tuning: batch statistics (train mode) or frozen running ones
    finetune_lr: float = 3e-4
    finetune_weight_decay: float = 1e-5
    eval_every: int = 50
    finetune_patience: int = 3  # stop a candidate after this many evaluations without improvement (0: off)
    finetune_projection: bool = True  # with patience: also stop one whose recent gain cannot reach the bound in time
    batch: int = 32
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0: one thread for small models (< 50M MACs), else torch's default
    seed: int = 0
    provider: str = "cpu"
    baseline: bool = False
    fold_bn: bool = False  # export option for the answer
    opset: int | None = None  # export option for the answer
    round_to: int = 1  # kept channel counts rounded to a multiple of this
    metric: str | None = None  # onnxwootz.metrics name; None: the constraint's metric, else from labels and outputs
    preprocess: str | None = None  # preset (imagenet | unit | none), JSON object or .json path; None: the metadata's
    input_shape: list[int] | None = None  # the first input's shape (dynamic dims); None: 1 x the data's shape

    def validate(self) -> "Spec":
        if not self.rates or any(not 0 < r < 1 for r in self.rates):
            raise BadSpecError(f"rates must be numbers in (0, 1), got {self.rates}")
        if self.candidates < 1:
            raise BadSpecError(f"candidates must be >= 1, got {self.candidates}")
        if self.granularity != "module":
            raise BadSpecError("prune trains tuning blocks over module spans: use granularity 'module'")
        self.objective_key()
        Constraint.parse(self.constraint)
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices and not (name in _OPTIONAL and getattr(self, name) is None):
                allowed = " or ".join(f"'{choice}'" for choice in choices)
                raise BadSpecError(f"{name} must be {allowed}, got '{getattr(self, name)}'")
        for name in ("pretrain_steps", "finetune_steps", "eval_every", "batch"):
            if getattr(self, name) < (0 if name.endswith("steps") else 1):
                raise BadSpecError(f"{name} must be positive, got {getattr(self, name)}")
        if self.profile_budget is not None and (isinstance(self.profile_budget, bool)
                                                or not isinstance(self.profile_budget, (int, float))
                                                or not self.profile_budget > 0):
            raise BadSpecError(f"profile_budget must be a positive number (a multiple of the allowed drop), "
                               f"got {self.profile_budget!r}")
        if isinstance(self.bound_margin, bool) or not isinstance(self.bound_margin, (int, float)) \
                or not self.bound_margin >= 0:
            raise BadSpecError(f"bound_margin must be a number >= 0 (standard errors; 0: no margin), "
                               f"got {self.bound_margin!r}")
        if isinstance(self.confirm_fraction, bool) or not isinstance(self.confirm_fraction, (int, float)) \
                or not 0 <= self.confirm_fraction < 1:
            raise BadSpecError(f"confirm_fraction must be a number in [0, 1) (0: no confirmation split), "
                               f"got {self.confirm_fraction!r}")
        if not isinstance(self.finetune_projection, bool):
            raise BadSpecError(f"finetune_projection must be true or false, got {self.finetune_projection!r}")
        if self.round_to < 1:
            raise BadSpecError(f"round_to must be a positive integer, got {self.round_to}")
        self.metric_name()
        if self.input_shape is not None and (
                not isinstance(self.input_shape, (list, tuple)) or not self.input_shape
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.input_shape)):
            raise BadSpecError(f"input_shape must be positive integers like [1, 3, 224, 224], got {self.input_shape}")
        if self.preprocess is not None and not isinstance(self.preprocess, str):
            raise BadSpecError(f"preprocess must be a preset name, a JSON object or a .json path, got {self.preprocess!r}")
        return self

    def metric_name(self) -> str | None:
        """The metric the spec asks for: the `metric` field, else the one the constraint names
        (None: chosen from the data and the model). Both given and different is an error."""
        from onnxwootz.metrics import parse_metric_name, same_metric

        named = self.parsed_constraint.metric
        if self.metric is None:
            return None if named == ANY_METRIC else parse_metric_name(named)
        metric = parse_metric_name(self.metric)
        if named != ANY_METRIC and not same_metric(named, metric):
            raise BadSpecError(f"the constraint names metric '{named}' but the metric is '{self.metric}': "
                               f"write the constraint with '{self.metric}' or 'accuracy'")
        return metric

    def start(self) -> str:
        """How pruned weights start: `pretrain_init`, else least squares for the method's blocks and
        L1 for the baseline (the paper's). `lsq` with the baseline refits every candidate's convs
        that lost inputs from the teacher's tensors, without blocks: the fair baseline."""
        return self.pretrain_init or ("l1" if self.baseline else "lsq")

    def loss(self, class_labels: bool) -> str:
        """The fine-tuning loss: `finetune_loss`, else distillation, except label cross-entropy
        for the paper's baseline on a class-label metric. Measured on glyphs (B3, 3 seeds): label
        cross-entropy on 5 images per class moved the method's assembled candidates by a median
        -1.1 points, distillation +0.4."""
        return self.finetune_loss or ("ce" if self.baseline and class_labels else "kd")

    def objective_key(self) -> str:
        parts = self.objective.split()
        if len(parts) != 2 or parts[0] != "min" or parts[1] not in OBJECTIVES:
            raise BadSpecError(f"objective must be 'min size', 'min macs' or 'min latency', got '{self.objective}'")
        return parts[1]

    @property
    def parsed_constraint(self) -> Constraint:
        return Constraint.parse(self.constraint)

    def pretrain_config(self) -> "PretrainConfig":
        """Block pre-training as the spec asks; one seed for the run, so that every pass draws
        the same batches and a block's weights never depend on how passes group blocks."""
        from onnxwootz.runtime.training import PretrainConfig

        return PretrainConfig(self.pretrain_steps, self.batch, self.pretrain_lr, self.pretrain_weight_decay, self.seed)

    def finetune_config(self, candidate: int) -> "FinetuneConfig":
        """Fine-tuning of candidate `candidate` as the spec asks, with a seed of its own (the
        same in any executor, in any order)."""
        from onnxwootz.runtime.training import FinetuneConfig

        return FinetuneConfig(self.finetune_steps, self.batch, self.finetune_lr, self.finetune_weight_decay,
                              self.eval_every, self.seed * 104729 + candidate, self.finetune_patience,
                              projection=self.finetune_projection, frozen_statistics=self.finetune_bn == "frozen")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_spec(path: str | Path | None = None, **overrides: Any) -> Spec:
    """Defaults, then the TOML file (a flat table, or a [prune] table), then overrides (None = unset)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise BadSpecError(f"spec file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadSpecError(f"{path} is not valid TOML: {exc}") from None
        values.update(data.get("prune", data))
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("preprocess"), dict):  # a TOML table: the same object as --preprocess '{...}'
        values["preprocess"] = json.dumps(values["preprocess"])
    known = {f.name for f in dataclasses.fields(Spec)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BadSpecError(f"unknown spec field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return Spec(**values).validate()
    except TypeError as exc:
        raise BadSpecError(f"bad spec: {exc}") from None
