"""The promising subspace: which configurations to evaluate. The paper samples its 500
configurations at random so that model sizes are spread out; uniform random rates would not
do that (sizes of random configurations pile up around the middle of the range), so the
sampler aims at evenly spaced size targets instead."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import numbers
import os
import random
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from onnxwootz.configs import checked_rate
from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.results import Result

if TYPE_CHECKING:
    from onnxwootz.sensitivity import Sensitivity

_ENUMERATE_LIMIT = 20_000  # spaces this small are listed in full instead of sampled
_DRAWS_PER_CONFIG = 30  # sampling budget once every size bin has a candidate
_MAX_DRAWS_PER_CONFIG = 4 * _DRAWS_PER_CONFIG  # the profile sampler gives up there (a drop budget can leave fewer)


def sample_configurations(n: int, n_units: int, rates: Sequence[float],
                          size_of: Callable[[list[float]], float], seed: int = 0) -> list[list[float]]:
    """`n` distinct configurations (one rate per unit) whose sizes `size_of(config)` spread
    near-uniformly from the smallest to the largest achievable size, sorted by size.

    Rate 0 (unit kept whole) is always allowed besides `rates`: the paper's space includes it
    and without it the unpruned end of the size range would be unreachable. Sizes are assumed
    to shrink as any rate grows, so the extremes are all units at the largest rate and all at
    0. The sampler aims at n evenly spaced size targets from the smallest to the largest size
    (so both ends are hit), each owning the sizes nearest to it (its bin). Candidates come from
    the whole space when it is small, otherwise from random draws (half of them with a random
    per-draw pruning pressure, so the tails are reached) until every bin holds one or the
    budget is spent. Each bin takes its candidate nearest its target; a bin left empty (sizes
    can be discrete) takes the nearest unused candidate instead. Deterministic for a seed."""
    choices = _choices(n, n_units, rates)
    space = len(choices) ** n_units
    rng = random.Random(seed)
    low, high = size_of([choices[-1]] * n_units), size_of([0.0] * n_units)
    step = (high - low) / (n - 1) if n > 1 else 0.0  # targets low, low + step, ..., high

    def bin_of(size: float) -> int:
        return min(n - 1, max(0, round((size - low) / step))) if step > 0 else 0

    pool: dict[tuple[float, ...], float] = {}
    if space <= max(_ENUMERATE_LIMIT, 4 * n):
        for config in itertools.product(choices, repeat=n_units):
            pool[config] = size_of(list(config))
    else:
        for config in ((choices[-1],) * n_units, (0.0,) * n_units):
            pool[config] = size_of(list(config))
        hit = {bin_of(size) for size in pool.values()}
        draws = 0
        while len(pool) < n or (len(hit) < n and draws < _DRAWS_PER_CONFIG * n):
            config = _draw(rng, choices, n_units)
            draws += 1
            if config not in pool:
                pool[config] = size_of(list(config))
                hit.add(bin_of(pool[config]))
    return [list(config) for config in _spread(pool, n, low, step, bin_of, rng)]


def _choices(n: int, n_units: int, rates: Sequence[float]) -> list[float]:
    """The sorted rates with 0, once `n` distinct configurations are known to exist."""
    choices = sorted({0.0, *(checked_rate(r) for r in rates)})
    if n < 1:
        raise BadSpecError(f"the number of configurations must be at least 1, got {n}")
    if n_units < 1:
        raise BadSpecError(f"the model must have at least one prunable unit, got {n_units}")
    space = len(choices) ** n_units
    if space < n:
        raise BadSpecError(f"only {space} distinct configurations exist ({len(choices)} rates including 0 "
                           f"over {n_units} units), fewer than the {n} asked for")
    return choices


def _draw(rng: random.Random, choices: list[float], n_units: int) -> tuple[float, ...]:
    """Half the draws are uniform; the other half prune each unit `Binomial(len-1, p)` steps
    up the sorted rates with p drawn per configuration, which reaches both size tails."""
    if rng.random() < 0.5:
        return tuple(rng.choice(choices) for _ in range(n_units))
    pressure = rng.random()
    steps = len(choices) - 1
    return tuple(choices[sum(rng.random() < pressure for _ in range(steps))] for _ in range(n_units))


def _spread(pool: dict[tuple[float, ...], float], n: int, low: float, step: float,
            bin_of: Callable[[float], int], rng: random.Random) -> list[tuple[float, ...]]:
    """One configuration per size bin, nearest the bin's target; empty bins take the nearest
    unused candidate to their target. Ties are broken by a seeded shuffle, not pool order."""
    candidates = list(pool)
    rng.shuffle(candidates)
    candidates.sort(key=pool.__getitem__)  # stable: equal sizes keep the shuffled order
    sizes = [pool[c] for c in candidates]
    by_bin: dict[int, list[int]] = {}
    for i, size in enumerate(sizes):
        by_bin.setdefault(bin_of(size), []).append(i)
    used = [False] * len(candidates)
    centres = [low + b * step for b in range(n)]
    chosen: list[int] = []
    empty: list[int] = []
    for b, centre in enumerate(centres):
        if b in by_bin:
            pick = min(by_bin[b], key=lambda i: abs(sizes[i] - centre))
            used[pick] = True
            chosen.append(pick)
        else:
            empty.append(b)
    for b in empty:
        pick = _nearest_unused(sizes, used, centres[b])
        used[pick] = True
        chosen.append(pick)
    return [candidates[i] for i in sorted(chosen, key=lambda i: (sizes[i], i))]


def _nearest_unused(sizes: list[float], used: list[bool], target: float) -> int:
    right = bisect.bisect_left(sizes, target)
    left = right - 1
    while True:
        if left >= 0 and used[left]:
            left -= 1
            continue
        if right < len(sizes) and used[right]:
            right += 1
            continue
        if left < 0:
            return right
        if right >= len(sizes) or target - sizes[left] <= sizes[right] - target:
            return left
        return right


PROFILE_LEVELS = 6
"""Aggressiveness levels of the profile sampler: nothing pruned, then drop thresholds at evenly
spaced quantiles of the measured drops, the last one the largest (every unit at its top rate)."""
PROFILE_PERTURBATION = 0.25
"""Chance that a segment of a profile configuration moves one rate step off its level's rate."""


PROFILE_MAX_DROP = 0.5
"""The profile sampler leaves out a rate at which a unit, pruned alone, loses more than this
fraction of the teacher's headroom (its metric above chance, Sensitivity.headroom): training
did not bring such units back on the real OCR nets (PP-OCRv4's recognizer keeps 6% of its
exact strings with its last unit pruned at 0.2, its detector 0.2% of its map IoU with its
backbone unit at 0.2), while units that lose less came back (the orientation classifier: 0.71
at assembly, 0.955 after 25 steps, for a bound of 0.96; its 2-class chance is 0.5, and a
candidate with its first unit at 0.5, at chance alone, reached only 0.86 after 100 steps)."""


def sample_profile_configurations(n: int, drops: Sequence[Mapping[float, float]], rates: Sequence[float],
                                  size_of: Callable[[list[float]], float], seed: int = 0,
                                  levels: int = PROFILE_LEVELS,
                                  perturbation: float = PROFILE_PERTURBATION,
                                  max_drop: float = math.inf, max_total_drop: float = math.inf) -> list[list[float]]:
    """Up to `n` distinct configurations drawn around a sensitivity profile, the way the
    pruning-rate search tools that produce the paper's promising subspace draw them; sorted by
    size `size_of(config)`, ties by rates. `drops[u][r]` is the metric drop with unit u alone
    pruned at rate r (onnxwootz.sensitivity), for every rate in `rates`; rate 0 is always allowed.

    A unit tolerates rate r up to the largest drop at any rate <= r (drops measured on a few
    images are not monotone); a rate whose tolerance exceeds `max_drop` is never drawn for
    that unit (fewer than `n` configurations come back when that leaves fewer). Level 0 prunes
    nothing; level k >= 1 gives each unit the largest allowed rate whose tolerance is under the
    k-th threshold (quantiles of all allowed tolerances). Consecutive units whose level-by-level
    rates, before the cap, stay within one step of each other form a segment (the stage-wise pruning of
    sensitivity-based tools) that takes one rate, the one its most sensitive member tolerates:
    every configuration is a few runs of equal rates, and configurations share those runs, so
    Sequitur finds multi-unit tuning blocks. Segments too few to give n combinations are
    halved, longest first. Each configuration draws a level; each segment moves one rate step
    up or down with probability `perturbation`. When `_DRAWS_PER_CONFIG * n` draws leave fewer
    than n distinct configurations, later draws give each segment a uniform random allowed rate
    (still a whole run).

    With a finite `max_total_drop` (the drop budget) damage is taken as additive: a
    configuration's summed tolerances (negative drops count as 0) must stay within the budget,
    and level k's threshold is the largest one whose configuration sums to at most k/(levels-1)
    of it, so the levels step evenly from the teacher to the budget instead of to every unit at
    its top rate. Units that are harmless alone are not harmless together: on PP-OCRv4's
    recognizer each unit refitted at 0.5 kept 0.90-0.96 exact strings alone, and candidates
    with all of them at 0.5 kept 0.00. Draws over the budget are dropped, so fewer than `n`
    may come back. Deterministic for a seed."""
    choices = _choices(n, len(drops), rates)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 3:
        raise BadSpecError(f"the profile sampler needs at least 3 levels, got {levels!r}")
    if not 0.0 <= perturbation <= 1.0:
        raise BadSpecError(f"the perturbation probability must be in [0, 1], got {perturbation!r}")
    tolerance = [_tolerance(unit_drops, choices[1:], unit) for unit, unit_drops in enumerate(drops)]
    allowed = [sum(value <= max_drop for value in unit) for unit in tolerance]  # steps up the rates
    segments = _segments(_signatures(tolerance, _quantile_thresholds(tolerance, levels)))  # the profile's shape
    capped = [[value if value <= max_drop else math.inf for value in unit] for unit in tolerance]

    def space(parts: list[list[int]]) -> int:
        return math.prod(1 + min(allowed[u] for u in part) for part in parts)

    while space(segments) < n and len(segments) < len(drops):
        longest = max(range(len(segments)), key=lambda i: len(segments[i]))
        half = len(segments[longest]) // 2
        segments[longest:longest + 1] = [segments[longest][:half], segments[longest][half:]]

    def total_drop(steps: Sequence[int]) -> float:
        return sum(max(0.0, tolerance[u][step - 1]) for segment, step in zip(segments, steps) if step
                   for u in segment)

    def steps_under(threshold: float) -> list[int]:
        return [min(sum(value <= threshold for value in capped[u]) for u in segment) for segment in segments]

    if math.isfinite(max_total_drop):
        thresholds = _budget_thresholds(capped, levels, max_total_drop, lambda t: total_drop(steps_under(t)))
    else:
        thresholds = _quantile_thresholds(capped, levels)
    segment_steps = [list(by_level) for by_level in zip(*(steps_under(t) for t in thresholds))]
    caps = [min(allowed[u] for u in segment) for segment in segments]
    wanted = min(n, space(segments))
    rng = random.Random(seed)
    seen: dict[tuple[float, ...], float] = {}
    draws = 0
    while len(seen) < wanted and draws < _MAX_DRAWS_PER_CONFIG * n:
        level = rng.randrange(levels)
        uniform = draws >= _DRAWS_PER_CONFIG * n
        steps = []
        for by_level, cap in zip(segment_steps, caps):
            step = by_level[level]
            if uniform:
                step = rng.randrange(cap + 1)
            elif rng.random() < perturbation:
                step = min(cap, max(0, step + rng.choice((-1, 1))))
            steps.append(step)
        draws += 1
        if total_drop(steps) > max_total_drop:
            continue
        config = tuple(choices[step] for segment, step in zip(segments, steps) for _ in segment)
        if config not in seen:
            seen[config] = size_of(list(config))
    return [list(config) for config in sorted(seen, key=lambda c: (seen[c], c))]


def _signatures(tolerance: list[list[float]], thresholds: list[float]) -> list[list[int]]:
    """Per unit and level, how many rate steps its tolerances allow under the level's threshold."""
    return [[sum(value <= threshold for value in unit) for threshold in thresholds] for unit in tolerance]


def _quantile_thresholds(tolerance: list[list[float]], levels: int) -> list[float]:
    """Level 0 allows nothing; levels 1.. sit at evenly spaced quantiles of the finite tolerances."""
    values = sorted(value for unit in tolerance for value in unit if math.isfinite(value)) or [-math.inf]
    return [-math.inf] + [values[round(j * (len(values) - 1) / (levels - 2))] for j in range(levels - 1)]


def _budget_thresholds(tolerance: list[list[float]], levels: int, budget: float,
                       total_at: Callable[[float], float]) -> list[float]:
    """Level k's threshold: the largest finite tolerance at which the configuration's summed
    drop `total_at(threshold)` (non-decreasing in it) stays within k/(levels-1) of `budget`."""
    values = sorted({value for unit in tolerance for value in unit if math.isfinite(value)})
    totals = [total_at(value) for value in values]  # non-decreasing, so bisect finds the last that fits
    thresholds = [-math.inf]
    for level in range(1, levels):
        fits = bisect.bisect_right(totals, budget * level / (levels - 1))
        thresholds.append(values[fits - 1] if fits else -math.inf)
    return thresholds


def _tolerance(unit_drops: Mapping[float, float], rates: list[float], unit: int) -> list[float]:
    """Running maximum of a unit's drops over the sorted rates."""
    missing = [rate for rate in rates if rate not in unit_drops]
    if missing:
        raise BadSpecError(f"the sensitivity profile has no drop for unit {unit} at rate {missing[0]:g}")
    values = [unit_drops[rate] for rate in rates]
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) for v in values):
        raise BadSpecError(f"the sensitivity profile of unit {unit} holds a drop that is not a finite number")
    return list(itertools.accumulate((float(v) for v in values), max))


def _segments(signatures: list[list[int]]) -> list[list[int]]:
    """Maximal runs of consecutive units whose rate steps, level by level, span at most one step."""
    segments = [[0]]
    for unit in range(1, len(signatures)):
        joined = segments[-1] + [unit]
        if all(max(signatures[u][k] for u in joined) - min(signatures[u][k] for u in joined) <= 1
               for k in range(len(signatures[unit]))):
            segments[-1] = joined
        else:
            segments.append([unit])
    return segments


@dataclasses.dataclass
class SampledConfig:
    rates: list[float]
    params: int
    macs: int


@dataclasses.dataclass
class SubspaceResult(Result):
    model: str
    units: list[str]
    output: str | None
    configurations: list[SampledConfig]
    sampler: str = "spread"
    sensitivity: Sensitivity | None = None  # the profile the "profile" sampler drew around


SAMPLERS = ("spread", "profile")
"""`spread`: sizes spread near uniformly (the paper's random sample); `profile`: around the
teacher's measured per-unit sensitivity, as pruning-rate search tools draw them."""


def subspace(model, n: int, rates: Sequence[float] = (0.3, 0.5, 0.7), seed: int = 0,
             output: str | os.PathLike[str] | None = None, granularity: str = "module", sampler: str = "spread",
             data: str | None = None) -> SubspaceResult:
    """Sample the promising subspace of `model`: `n` distinct configurations, spread in size or
    around the sensitivity profile measured on `data` (default: the dataset the model's
    metadata names); params and MACs come from the cost model (onnxwootz.costs)."""
    from onnxwootz.core.atomic import write_json
    from onnxwootz.costs import CostModel
    from onnxwootz.prepared import model_label, prepare

    if n < 1:
        raise BadSpecError(f"-n must be at least 1, got {n}")
    if sampler not in SAMPLERS:
        raise BadSpecError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    prepared = prepare(model)
    costs = CostModel(prepared, granularity)

    def size_of(rates: list[float]) -> float:
        return costs.estimate(list(rates))[0]

    sensitivity = None
    if sampler == "profile":
        from onnxwootz.sensitivity import profile

        _choices(n, len(costs.unit_names), rates)  # a bad request fails before the measurement
        sensitivity = profile(prepared, data, rates, granularity, seed)
        configs = sample_profile_configurations(n, sensitivity.drops(), rates, size_of, seed,
                                                max_drop=PROFILE_MAX_DROP * sensitivity.headroom)
    else:
        configs = sample_configurations(n, len(costs.unit_names), rates, size_of, seed)
    sampled = [SampledConfig(list(c), *costs.estimate(list(c))) for c in configs]
    if output is not None:
        write_json(output, [c.rates for c in sampled])
    return SubspaceResult(model_label(model), costs.unit_names, str(output) if output else None, sampled, sampler,
                          sensitivity)
