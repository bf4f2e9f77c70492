"""Tuning-block identification (METHOD.md step 1): the paper's worked example, properties
over random subspaces, CONFIGS.json validation through the CLI, and the --json contract."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from onnxwootz.cli import app
from onnxwootz.configs import load_configs, symbol, validate_configs
from onnxwootz.core.errors import BadSpecError
from onnxwootz.tuning_blocks import BlockSet, TuningBlock, blocks, group_blocks, identify_blocks

# The paper's four networks over units named 1..5.
PAPER_NETWORKS = [
    [0.3, 0.3, 0.3, 0.5, 0.0],
    [0.3, 0.3, 0.5, 0.5, 0.0],
    [0.5, 0.3, 0.3, 0.5, 0.0],
    [0.0, 0.3, 0.5, 0.5, 0.0],
]
PAPER_UNITS = ["1", "2", "3", "4", "5"]


def test_symbol_uses_the_papers_form() -> None:
    assert symbol("4", 0.5) == "4(.5)"
    assert symbol("5", 0.0) == "5(0)"
    assert symbol("1", 0.3) == "1(.3)"
    assert symbol("conv2", 0.25) == "conv2(.25)"


def test_worked_example_gives_the_papers_grammar() -> None:
    grammar = identify_blocks(PAPER_NETWORKS, PAPER_UNITS).grammar
    assert grammar is not None
    assert grammar.rules == {
        "r1": ["1(.3)", "2(.3)"],
        "r2": ["3(.3)", "r4"],
        "r3": ["3(.5)", "r4"],
        "r4": ["4(.5)", "5(0)"],
    }
    assert grammar.root == ["r1", "r2", "|", "r1", "r3", "|", "1(.5)", "2(.3)", "r2", "|",
                            "1(0)", "2(.3)", "r3", "|"]
    assert grammar.frequency == {"r1": 2, "r2": 2, "r3": 2, "r4": 4}


def test_worked_example_selects_blocks_node_by_node() -> None:
    # Frequencies in the full expansion (root r0 occurs once):
    #   terminals: 1(.3)=2  2(.3)=4  3(.3)=2  3(.5)=2  4(.5)=4  5(0)=4  1(.5)=1  1(0)=1
    #   rules:     r1=2 (root twice)  r2=2  r3=2  r4=4 (once in r2, once in r3, each used twice)
    # Children first:
    #   terminals with frequency > 1 become candidates; 1(.5) and 1(0) (frequency 1) do not.
    #   r4 = 4(.5) 5(0): frequency 4 == max(4, 4) -> candidate; unmarks 4(.5) and 5(0).
    #   r1 = 1(.3) 2(.3): frequency 2 != max(2, 4) -> dead end (2(.3) serves four networks
    #        on its own, so the longer block is not reused as often as its parts).
    #   r2 = 3(.3) r4:    frequency 2 != max(2, 4) -> dead end.
    #   r3 = 3(.5) r4:    frequency 2 != max(2, 4) -> dead end.
    #   r0 (the root) is the network list, never a block.
    # Marked: 1(.3), 2(.3), 3(.3), 3(.5) and r4 = 4(.5) 5(0).
    result = identify_blocks(PAPER_NETWORKS, PAPER_UNITS)
    assert [(b.symbols, b.frequency) for b in result.blocks] == [
        (["1(.3)"], 2), (["2(.3)"], 4), (["3(.3)"], 2), (["3(.5)"], 2), (["4(.5)", "5(0)"], 4)]
    assert result.blocks[4] == TuningBlock(start=3, rates=(0.5, 0.0), symbols=["4(.5)", "5(0)"], frequency=4)
    # Networks 3 and 4 prune unit 1 at rates used only once: no block covers it.
    assert [(c.blocks, c.uncovered) for c in result.composites] == [
        ([0, 1, 2, 4], []), ([0, 1, 3, 4], []), ([1, 2, 4], [0]), ([1, 3, 4], [0])]
    # 3(.3) and 3(.5) share unit index 2, so they cannot train in one memory-bound pass.
    assert result.groups == [[0, 1, 2, 4], [3]]


def test_per_unit_strategy_makes_one_block_per_pruned_unit() -> None:
    result = identify_blocks(PAPER_NETWORKS, PAPER_UNITS, strategy="per-unit")
    assert [(b.symbols, b.frequency) for b in result.blocks] == [
        (["1(.3)"], 2), (["1(.5)"], 1), (["2(.3)"], 4), (["3(.3)"], 2), (["3(.5)"], 2), (["4(.5)"], 4)]
    assert result.grammar is None
    assert all(c.uncovered == [4] for c in result.composites[:3]) and result.composites[3].uncovered == [0, 4]


def test_all_zero_repeats_are_not_blocks() -> None:
    # "3(0) 4(0)" repeats in every network but is the teacher itself: nothing to train.
    result = identify_blocks([[0.3, 0.5, 0.0, 0.0], [0.5, 0.3, 0.0, 0.0], [0.3, 0.3, 0.0, 0.0]])
    assert all(any(rate > 0 for rate in b.rates) for b in result.blocks)
    assert all(2 in c.uncovered and 3 in c.uncovered for c in result.composites)


def test_identical_networks_share_one_whole_network_block() -> None:
    result = identify_blocks([[0.3, 0.5, 0.7]] * 3)
    assert [(b.start, b.rates, b.frequency) for b in result.blocks] == [(0, (0.3, 0.5, 0.7), 3)]


def test_group_blocks_keeps_overlapping_blocks_apart() -> None:
    def block(start: int, length: int) -> TuningBlock:
        return TuningBlock(start=start, rates=(0.5,) * length, symbols=[], frequency=2)

    assert group_blocks([block(0, 3), block(1, 1), block(3, 2), block(2, 1)]) == [[0, 2], [1, 3]]


# --- properties over random subspaces -------------------------------------------------------

RATES = st.sampled_from([0.0, 0.3, 0.5, 0.7])


@st.composite
def subspaces(draw: st.DrawFn) -> list[list[float]]:
    """Networks that are a few base configurations with a few units changed: uniform random
    rates would almost never repeat a run of units, and multi-unit blocks need exercising."""
    n_units = draw(st.integers(1, 10))
    bases = draw(st.lists(st.lists(RATES, min_size=n_units, max_size=n_units), min_size=1, max_size=3))
    changes = st.lists(st.tuples(st.integers(0, n_units - 1), RATES), max_size=3)
    networks = draw(st.lists(st.tuples(st.sampled_from(bases), changes), min_size=1, max_size=25))
    configs = []
    for base, edits in networks:
        config = list(base)
        for unit, rate in edits:
            config[unit] = rate
        configs.append(config)
    return configs


def _check_block_set(configs: list[list[float]], result: BlockSet) -> None:
    n_units = len(configs[0])
    assert len(result.composites) == len(configs)
    users = [0] * len(result.blocks)
    for config, composite in zip(configs, result.composites):
        rebuilt: dict[int, float] = {}
        previous_stop = 0
        for index in composite.blocks:
            block = result.blocks[index]
            users[index] += 1
            assert block.start >= previous_stop, "blocks of a network are disjoint and in unit order"
            previous_stop = block.stop
            for offset, rate in enumerate(block.rates):
                rebuilt[block.start + offset] = rate
        for unit in composite.uncovered:
            assert unit not in rebuilt
            rebuilt[unit] = config[unit]
        assert [rebuilt.get(u) for u in range(n_units)] == config
        # a block's rates are exactly the network's rates on the block's units
        assert all(config[block.start:block.stop] == list(block.rates)
                   for block in (result.blocks[i] for i in composite.blocks))
    for block, count in zip(result.blocks, users):
        assert 0 <= block.start < block.stop <= n_units, "a block is a run of consecutive units"
        assert block.symbols == [symbol(str(block.start + i), r) for i, r in enumerate(block.rates)]
        assert any(rate > 0 for rate in block.rates)
        assert block.frequency == count
    assert len({(b.start, b.rates) for b in result.blocks}) == len(result.blocks)
    members = sorted(i for group in result.groups for i in group)
    assert members == list(range(len(result.blocks))), "groups partition the blocks"
    for group in result.groups:
        covered = [u for i in group for u in range(result.blocks[i].start, result.blocks[i].stop)]
        assert len(covered) == len(set(covered)), "blocks in one group share no unit"


@settings(max_examples=150, deadline=None)
@given(subspaces())
def test_sequitur_blocks_properties(configs: list[list[float]]) -> None:
    result = identify_blocks(configs)
    _check_block_set(configs, result)
    for block in result.blocks:
        assert block.frequency >= 2, "a block must serve more than one network"
    # the grammar regenerates the input, and no rule reaches across an end marker
    grammar = result.grammar
    assert grammar is not None

    def expand(name: str) -> list[str]:
        return [s for v in grammar.rules[name] for s in (expand(v) if v in grammar.rules else [v])]

    flat = [s for v in grammar.root for s in (expand(v) if v in grammar.rules else [v])]
    expected = [s for config in configs for s in [symbol(str(u), r) for u, r in enumerate(config)] + ["|"]]
    assert flat == expected
    assert all("|" not in expand(name) for name in grammar.rules)


@settings(max_examples=60, deadline=None)
@given(subspaces())
def test_per_unit_blocks_properties(configs: list[list[float]]) -> None:
    result = identify_blocks(configs, strategy="per-unit")
    _check_block_set(configs, result)
    assert {(b.start, b.rates[0]) for b in result.blocks} == {
        (u, r) for config in configs for u, r in enumerate(config) if r > 0}


# --- CONFIGS.json validation ------------------------------------------------------------------

MALFORMED = [
    ("[[0.3, 0.5]", "is not valid JSON"),
    ('{"a": [0.3]}', "must be a JSON list of configurations (lists of rates), got an object"),
    ("[]", "holds no configurations"),
    ("[[0.3, 0.5], 0.5]", "row 2 is a number, expected a list of rates"),
    ("[[0.3, 0.5], []]", "row 2 is empty"),
    ("[[0.3, 0.5, 0.7], [0.3, 0.5, 0.7], [0.3, 0.5, 0.7, 0.0]]", "row 3 has 4 rates, expected 3"),
    ('[[0.3, "a"]]', 'row 1 rate 2 is not a number: "a"'),
    ("[[0.3, true]]", "row 1 rate 2 is not a number: true"),
    ("[[0.3, 1.0]]", "row 1 rate 2 is 1.0, outside [0, 1)"),
    ("[[-0.1, 0.3]]", "row 1 rate 1 is -0.1, outside [0, 1)"),
    ("[[NaN, 0.3]]", "row 1 rate 1 is nan, outside [0, 1)"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_configs_give_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "CONFIGS.json"
    path.write_text(text)
    with pytest.raises(BadSpecError) as caught:
        load_configs(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    result = CliRunner().invoke(app, ["blocks", str(path)])
    assert result.exit_code == BadSpecError.exit_code
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_missing_file_and_unknown_strategy_are_spec_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["blocks", str(tmp_path / "missing.json")])
    assert result.exit_code == BadSpecError.exit_code and "no such file" in result.stderr
    path = tmp_path / "c.json"
    path.write_text(json.dumps(PAPER_NETWORKS))
    result = CliRunner().invoke(app, ["blocks", str(path), "--strategy", "greedy"])
    assert result.exit_code == BadSpecError.exit_code and "unknown strategy 'greedy'" in result.stderr


def test_validate_configs_checks_the_models_unit_count() -> None:
    with pytest.raises(BadSpecError, match=r"row 1 has 5 rates, expected 4 \(one per unit of the model\)"):
        validate_configs(PAPER_NETWORKS, n_units=4)
    assert validate_configs([[0, 0.5]], n_units=2) == [[0.0, 0.5]]


# --- the command and its --json contract ------------------------------------------------------


@pytest.mark.parametrize("strategy", ["sequitur", "per-unit"])
def test_json_output_is_the_api_result(tmp_path: Path, strategy: str) -> None:
    path = tmp_path / "CONFIGS.json"
    path.write_text(json.dumps(PAPER_NETWORKS))
    result = CliRunner().invoke(app, ["blocks", str(path), "--strategy", strategy, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == blocks(path, strategy=strategy).to_dict()
    assert set(printed) == {"schema_version", "blocks", "networks", "groups", "strategy", "units", "grammar"}
    assert set(printed["blocks"][0]) == {"symbols", "frequency", "start", "units", "rates"}
    assert set(printed["networks"][0]) == {"blocks", "uncovered"}
    assert printed["units"] == ["0", "1", "2", "3", "4"]


def test_table_output_lists_blocks(tmp_path: Path) -> None:
    path = tmp_path / "CONFIGS.json"
    path.write_text(json.dumps(PAPER_NETWORKS))
    result = CliRunner().invoke(app, ["blocks", str(path)])
    assert result.exit_code == 0, result.output
    assert "3(.5) 4(0)" in result.stdout and "5 tuning blocks (sequitur)" in result.stdout


def test_model_supplies_unit_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # blocks() asks onnxwootz.analysis.unit_names(model) for the names; stand in for it here
    # so this test does not depend on the analysis of a real model.
    seen: list[str] = []

    def unit_names(model_path: str | Path) -> list[str]:
        seen.append(str(model_path))
        return ["stem", "layer1", "layer2", "layer3", "head"]

    monkeypatch.setitem(sys.modules, "onnxwootz.analysis", types.SimpleNamespace(unit_names=unit_names))
    path = tmp_path / "CONFIGS.json"
    path.write_text(json.dumps(PAPER_NETWORKS))
    result = blocks(path, model=tmp_path / "model.onnx")
    assert seen == [str(tmp_path / "model.onnx")]
    assert result.units == ["stem", "layer1", "layer2", "layer3", "head"]
    assert result.to_dict()["blocks"][4]["units"] == ["layer3", "head"]
    assert result.blocks[4].symbols == ["layer3(.5)", "head(0)"]
    short = tmp_path / "short.json"
    short.write_text(json.dumps([[0.3, 0.5]]))
    cli = CliRunner().invoke(app, ["blocks", str(short), "--model", str(tmp_path / "model.onnx")])
    assert cli.exit_code == BadSpecError.exit_code
    assert "row 1 has 2 rates, expected 5 (one per unit of the model)" in cli.stderr


def test_a_candidate_takes_each_layer_from_the_block_that_cuts_its_inputs() -> None:
    """A chain unit's block (units 0) runs on into the next unit's module: the layer there that
    reads its cut channels (b) comes from it; that module's other layers (c), cut by unit 1, come
    from unit 1's block; a layer no unit cuts (a) from the first block that holds it."""
    import numpy as np

    from onnxwootz.candidates import block_weights

    ones, twos, threes = (np.full((2, 2), value, np.float32) for value in (1, 2, 3))
    reads = {"a.w": set(), "b.w": {0}, "c.w": {1}, "d.w": {2}}
    merged = block_weights([(range(0, 1), {"a.w": ones, "b.w": ones, "c.w": ones}),
                            (range(1, 2), {"a.w": twos, "b.w": twos, "c.w": twos, "d.w": twos}),
                            (range(2, 3), {"d.w": threes})], reads)
    assert set(merged) == {"a.w", "b.w", "c.w", "d.w"}
    assert (merged["a.w"] == 1).all() and (merged["b.w"] == 1).all() and (merged["c.w"] == 2).all()
    assert (merged["d.w"] == 3).all()
