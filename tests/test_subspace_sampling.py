"""The subspace samplers: the spread sampler's distinct configurations whose model sizes spread
over the whole achievable range, and the profile sampler's configurations around a sensitivity
profile, which share runs of rates (multi-unit tuning blocks); both reproducible, with clear
errors for impossible requests."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from onnxwootz.configs import load_configs
from onnxwootz.core.errors import BadSpecError
from onnxwootz.sampling import sample_configurations, sample_profile_configurations, subspace
from onnxwootz.tuning_blocks import TuningBlock, identify_blocks

RATES = [0.3, 0.5, 0.7]


def _size_function(n_units: int, seed: int = 1):
    """A model whose units hold different numbers of parameters; pruning a unit at rate r keeps
    (1 - r)^2 of them (its own filters and the next unit's input channels)."""
    rng = random.Random(seed)
    weights = [rng.uniform(1.0, 10.0) for _ in range(n_units)]
    return lambda config: sum(w * (1.0 - r) ** 2 for w, r in zip(weights, config))


def test_configurations_are_distinct_valid_and_sorted_by_size() -> None:
    size_of = _size_function(20)
    configs = sample_configurations(200, 20, RATES, size_of)
    assert len(configs) == 200
    assert len({tuple(c) for c in configs}) == 200
    assert all(len(c) == 20 and set(c) <= {0.0, *RATES} for c in configs)
    sizes = [size_of(c) for c in configs]
    assert sizes == sorted(sizes)


def test_same_seed_same_configurations_other_seed_differs() -> None:
    size_of = _size_function(12)
    first = sample_configurations(100, 12, RATES, size_of, seed=7)
    assert first == sample_configurations(100, 12, RATES, size_of, seed=7)
    assert first != sample_configurations(100, 12, RATES, size_of, seed=8)


def test_sizes_spread_over_the_whole_range() -> None:
    n, n_units = 300, 30
    size_of = _size_function(n_units)
    sizes = [size_of(c) for c in sample_configurations(n, n_units, RATES, size_of)]
    smallest, largest = size_of([0.7] * n_units), size_of([0.0] * n_units)
    assert sizes[0] == pytest.approx(smallest) and sizes[-1] == pytest.approx(largest)
    step = (largest - smallest) / (n - 1)
    gaps = [b - a for a, b in zip(sizes, sizes[1:])]
    assert max(gaps) < 2.5 * step, "no big holes in the size range"
    # near-uniform: every tenth of the range holds about a tenth of the configurations
    deciles = [0] * 10
    for size in sizes:
        deciles[min(9, int((size - smallest) / (largest - smallest) * 10))] += 1
    assert all(abs(count - n / 10) <= 0.2 * n / 10 + 2 for count in deciles), deciles


def test_enumerated_space_hits_every_target_as_closely_as_sizes_allow() -> None:
    # 4^6 = 4096 configurations: listed in full. Achievable sizes have holes of their own (near
    # the unpruned end, pruning even the lightest unit drops a lot), so each evenly spaced
    # target is checked against the nearest size that exists at all.
    n, n_units = 100, 6
    size_of = _size_function(n_units)
    sizes = [size_of(c) for c in sample_configurations(n, n_units, RATES, size_of)]
    achievable = sorted(size_of(list(c)) for c in itertools.product([0.0, *RATES], repeat=n_units))
    step = (achievable[-1] - achievable[0]) / (n - 1)
    for b in range(n):
        target = achievable[0] + b * step
        best_possible = min(abs(s - target) for s in achievable)
        assert min(abs(s - target) for s in sizes) <= best_possible + step


def test_uniform_random_configurations_would_not_spread() -> None:
    # Why the sampler aims at size targets: plain random rates pile up mid-range.
    size_of = _size_function(30)
    rng = random.Random(0)
    plain = [size_of([rng.choice([0.0, *RATES]) for _ in range(30)]) for _ in range(300)]
    sampled = [size_of(c) for c in sample_configurations(300, 30, RATES, size_of)]
    smallest, largest = size_of([0.7] * 30), size_of([0.0] * 30)

    def in_tails(sizes: list[float]) -> int:
        return sum(1 for s in sizes if not smallest + 0.2 * (largest - smallest) < s < largest - 0.2 * (largest - smallest))

    assert in_tails(plain) < 0.1 * 300 < 0.35 * 300 < in_tails(sampled)


def test_rate_zero_is_always_allowed_and_a_small_space_is_used_whole() -> None:
    size_of = _size_function(3)
    configs = sample_configurations(8, 3, [0.5], size_of)
    assert sorted(map(tuple, configs)) == sorted(itertools.product([0.0, 0.5], repeat=3))


def test_too_small_space_says_how_many_exist() -> None:
    with pytest.raises(BadSpecError, match=r"only 9 distinct configurations exist .* fewer than the 10 asked for"):
        sample_configurations(10, 2, [0.3, 0.5, 0.3], _size_function(2))


@pytest.mark.parametrize(("args", "message"), [
    ((0, 4, RATES), "at least 1"),
    ((5, 0, RATES), "at least one prunable unit"),
    ((5, 4, [0.3, 1.0]), "outside \\[0, 1\\)"),
])
def test_bad_arguments_are_spec_errors(args: tuple, message: str) -> None:
    with pytest.raises(BadSpecError, match=message):
        sample_configurations(*args, _size_function(4))


def test_discrete_sizes_still_give_distinct_configurations() -> None:
    # Every unit weighs the same: many configurations share a size, and bins can stay empty.
    configs = sample_configurations(60, 6, RATES, lambda c: sum(1.0 - r for r in c))
    assert len({tuple(c) for c in configs}) == 60


# --- the profile sampler ----------------------------------------------------------------------

TEACHER = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"


def _profile(n_units: int, seed: int = 3) -> list[dict[float, float]]:
    """Drops that grow with the rate, a unit's scale drawn log-uniformly (some units barely
    care, others lose a lot), with measurement noise that can make them non-monotone."""
    rng = random.Random(seed)
    drops = []
    for _ in range(n_units):
        scale = 10 ** rng.uniform(-2.5, -0.5)
        drops.append({rate: max(0.0, scale * factor + rng.gauss(0, 0.002))
                      for rate, factor in zip(RATES, (1.0, 2.5, 6.0))})
    return drops


def _multi_unit_blocks(configs: list[list[float]]) -> list[TuningBlock]:
    return [block for block in identify_blocks(configs).blocks if len(block.rates) >= 2]


def test_profile_configurations_are_distinct_valid_sorted_and_reproducible() -> None:
    size_of = _size_function(16)
    drops = _profile(16)
    configs = sample_profile_configurations(64, drops, RATES, size_of, seed=5)
    assert len(configs) == 64 and len({tuple(c) for c in configs}) == 64
    assert all(len(c) == 16 and set(c) <= {0.0, *RATES} for c in configs)
    sizes = [size_of(c) for c in configs]
    assert sizes == sorted(sizes)
    assert configs == sample_profile_configurations(64, drops, RATES, size_of, seed=5)
    assert configs != sample_profile_configurations(64, drops, RATES, size_of, seed=6)


def test_profile_configurations_share_runs_that_sequitur_turns_into_blocks() -> None:
    # The point of the profile sampler: configurations share multi-unit runs of rates, so the
    # compression step yields blocks spanning several units; the spread sampler's do not.
    size_of = _size_function(16)
    profile_configs = sample_profile_configurations(64, _profile(16), RATES, size_of)
    spread_configs = sample_configurations(64, 16, RATES, size_of)
    block_set = identify_blocks(profile_configs)
    multi = {i for i, block in enumerate(block_set.blocks) if len(block.rates) >= 2}
    assert len(multi) >= 3 and all(block_set.blocks[i].frequency >= 2 for i in multi)
    covered = sum(bool(multi & set(composite.blocks)) for composite in block_set.composites)
    assert covered >= len(profile_configs) // 2, "most networks use a multi-unit block"
    assert _multi_unit_blocks(spread_configs) == []


def test_profile_follows_the_sensitivity() -> None:
    # Units 0-7 barely care about pruning, units 8-15 lose a lot: the insensitive half is
    # pruned harder, and in the configurations near the profile (no perturbation) a unit
    # never takes a higher rate than a less sensitive one.
    drops = [{0.3: 0.001 * (1 + u), 0.5: 0.002 * (1 + u), 0.7: 0.004 * (1 + u)} for u in range(8)]
    drops += [{0.3: 0.05 * (1 + u), 0.5: 0.1 * (1 + u), 0.7: 0.3 * (1 + u)} for u in range(8)]
    configs = sample_profile_configurations(40, drops, RATES, _size_function(16), perturbation=0.1)
    first, second = (sum(sum(c[half]) for c in configs) for half in (slice(0, 8), slice(8, 16)))
    assert first > 1.5 * second
    exact = sample_profile_configurations(4, drops, RATES, _size_function(16), perturbation=0.0)
    assert [0.0] * 16 in exact, "level 0 prunes nothing"
    assert all(c[u] >= c[u + 1] for c in exact for u in range(15))


def test_profile_of_the_digits_teacher_gives_multi_unit_blocks_the_spread_subspace_lacks(tmp_path: Path) -> None:
    profile_result = subspace(TEACHER, 16, RATES, 0, tmp_path / "profile.json", sampler="profile", data="digits")
    spread_result = subspace(TEACHER, 16, RATES, 0)
    assert profile_result.sampler == "profile" and spread_result.sensitivity is None
    assert profile_result.sensitivity is not None and profile_result.sensitivity.metric == "accuracy"
    assert [u.name for u in profile_result.sensitivity.units] == profile_result.units
    configs = [c.rates for c in profile_result.configurations]
    assert load_configs(tmp_path / "profile.json", len(profile_result.units)) == configs
    assert len({tuple(c) for c in configs}) == 16
    assert _multi_unit_blocks(configs), "Sequitur finds blocks spanning >= 2 units"
    assert _multi_unit_blocks([c.rates for c in spread_result.configurations]) == []


def test_profile_sampler_fills_a_small_space() -> None:
    drops = [{0.5: 0.01}, {0.5: 0.02}, {0.5: 0.5}]
    configs = sample_profile_configurations(8, drops, [0.5], _size_function(3))
    assert sorted(map(tuple, configs)) == sorted(itertools.product([0.0, 0.5], repeat=3))


def test_profile_sampler_never_draws_a_rate_that_alone_loses_more_than_max_drop() -> None:
    # unit 2 loses 0.6 at 0.3 already (PP-OCRv4's last recognizer unit: 0.91 at 0.2), unit 1
    # tolerates 0.3 but not 0.5: no draw, perturbed or uniform, gives either more
    drops = [{0.3: 0.01, 0.5: 0.02, 0.7: 0.05}, {0.3: 0.1, 0.5: 0.45, 0.7: 0.6}, {0.3: 0.6, 0.5: 0.8, 0.7: 0.9}]
    configs = sample_profile_configurations(8, drops, RATES, _size_function(3), perturbation=1.0, max_drop=0.4)
    assert len(configs) == 8 and all(c[1] <= 0.3 and c[2] == 0.0 for c in configs)
    assert {c[0] for c in configs} == {0.0, *RATES}
    # a space the cap leaves smaller than n comes back whole, not as an endless draw
    few = sample_profile_configurations(10, drops, RATES, _size_function(3), max_drop=0.05)
    assert sorted(map(tuple, few)) == [(r, 0.0, 0.0) for r in (0.0, *RATES)]


def _summed_drop(drops: list[dict[float, float]], config: list[float]) -> float:
    """What the budget counts: each pruned unit's largest drop at or below its rate, at least 0."""
    return sum(max(0.0, *(value for rate, value in unit.items() if rate <= r)) for unit, r in zip(drops, config) if r)


def test_profile_sampler_keeps_summed_drops_within_the_budget_and_steps_up_to_it() -> None:
    # PP-OCRv4's recognizer: every unit refitted alone kept most of its strings, all of them
    # together kept none. Under a budget no draw, perturbed or uniform, sums past it, and the
    # levels step from the teacher up to it instead of to every unit at its top rate.
    drops = _profile(16, seed=3)
    drops[5] = {rate: -0.01 for rate in RATES}  # a drop below zero (noise) counts as none
    size_of = _size_function(16)
    free = sample_profile_configurations(32, drops, RATES, size_of, seed=2)
    budget = 0.25 * max(_summed_drop(drops, c) for c in free)
    for perturbation in (0.25, 1.0):
        configs = sample_profile_configurations(32, drops, RATES, size_of, seed=2, perturbation=perturbation,
                                                max_total_drop=budget)
        totals = [_summed_drop(drops, c) for c in configs]
        assert configs and len({tuple(c) for c in configs}) == len(configs)
        assert max(totals) <= budget + 1e-12
        assert max(totals) >= 0.5 * budget, "the top level reaches towards the budget"
        assert any(c[5] == 0.7 for c in configs), "the unit that loses nothing is pruned hardest"
    assert configs == sample_profile_configurations(32, drops, RATES, size_of, seed=2, perturbation=1.0,
                                                    max_total_drop=budget)
    assert sample_profile_configurations(8, drops, RATES, size_of, max_total_drop=0.0) == [
        [0.7 if u == 5 else 0.0 for u in range(16)], [0.5 if u == 5 else 0.0 for u in range(16)],
        [0.3 if u == 5 else 0.0 for u in range(16)], [0.0] * 16]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 10}, "only 9 distinct configurations exist"),
    ({"drops": [{0.3: 0.1, 0.5: 0.2}, {0.3: 0.1}]}, "no drop for unit 1 at rate 0.5"),
    ({"drops": [{0.3: 0.1, 0.5: float("nan")}, {0.3: 0.1, 0.5: 0.2}]}, "not a finite number"),
    ({"levels": 2}, "at least 3 levels"),
    ({"perturbation": 1.5}, "in \\[0, 1\\]"),
])
def test_profile_sampler_bad_arguments_are_spec_errors(kwargs: dict, message: str) -> None:
    arguments = {"n": 4, "drops": [{0.3: 0.1, 0.5: 0.2}, {0.3: 0.1, 0.5: 0.3}], "rates": [0.3, 0.5],
                 "size_of": _size_function(2), **kwargs}
    with pytest.raises(BadSpecError, match=message):
        sample_profile_configurations(**arguments)


def test_unknown_sampler_is_a_spec_error() -> None:
    with pytest.raises(BadSpecError, match="unknown sampler 'sizes'; choose one of spread, profile"):
        subspace(TEACHER, 4, sampler="sizes")
