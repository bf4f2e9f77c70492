"""The promising subspace: which configurations to evaluate. The paper samples its 500
configurations at random so that model sizes are spread out; uniform random rates would not
do that (sizes of random configurations pile up around the middle of the range), so the
sampler aims at evenly spaced size targets instead."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import os
import random
from typing import Callable, Sequence

from onnxwootz.errors import BadSpecError
from onnxwootz.results import Result

_ENUMERATE_LIMIT = 20_000  # spaces this small are listed in full instead of sampled
_DRAWS_PER_CONFIG = 30  # sampling budget once every size bin has a candidate


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
    choices = sorted({0.0, *(_checked_rate(r) for r in rates)})
    if n < 1:
        raise BadSpecError(f"the number of configurations must be at least 1, got {n}")
    if n_units < 1:
        raise BadSpecError(f"the model must have at least one prunable unit, got {n_units}")
    space = len(choices) ** n_units
    if space < n:
        raise BadSpecError(f"only {space} distinct configurations exist ({len(choices)} rates including 0 "
                           f"over {n_units} units), fewer than the {n} asked for")
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


def _checked_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (math.isfinite(rate) and 0 <= rate < 1):
        raise BadSpecError(f"pruning rate {rate!r} is outside [0, 1)")
    return float(rate) + 0.0


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


def subspace(model, n: int, rates: Sequence[float] = (0.3, 0.5, 0.7), seed: int = 0,
             output: str | os.PathLike[str] | None = None, granularity: str = "module") -> SubspaceResult:
    """Sample the promising subspace of `model`: `n` distinct configurations whose sizes are
    spread near uniformly; params and MACs come from the cost model (onnxwootz.costs)."""
    from onnxwootz.atomic import write_json
    from onnxwootz.costs import CostModel
    from onnxwootz.prepared import model_label, prepare

    if n < 1:
        raise BadSpecError(f"-n must be at least 1, got {n}")
    costs = CostModel(prepare(model), granularity)
    configs = sample_configurations(n, len(costs.unit_names), rates, lambda r: costs.estimate(list(r))[0], seed)
    sampled = [SampledConfig(list(c), *costs.estimate(list(c))) for c in configs]
    if output is not None:
        write_json(output, [c.rates for c in sampled])
    return SubspaceResult(model_label(model), costs.unit_names, str(output) if output else None, sampled)
