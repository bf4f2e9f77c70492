"""The subspace sampler: distinct configurations whose model sizes spread over the whole
achievable range, reproducibly, with a clear error when the space is too small."""

from __future__ import annotations

import itertools
import random

import pytest

from onnxwootz.errors import BadSpecError
from onnxwootz.sampling import sample_configurations

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
