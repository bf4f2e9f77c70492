"""Tuning-block identification (METHOD.md step 1): which runs of consecutive units, at which
rates, are worth pre-training once and reusing across the candidate networks.

Strategy "sequitur" (the paper's hierarchical compression-based algorithm):
1. every configuration becomes its symbol sequence `(unit, rate)`; the sequences are
   concatenated with a unique `sksequitur.Mark` after each network. A Mark equals only
   itself, so no digram, hence no rule, ever spans two networks: every rule expands to a run
   of consecutive units of one network.
2. `sksequitur` builds the Sequitur grammar (linear time; 500 networks of 50 units take
   about 0.1 s here and the whole call about 0.25 s, so no home-grown Sequitur is needed).
3. The grammar is a DAG (a node per rule and per terminal symbol, an edge per body entry).
   A node's frequency is its number of occurrences in the full expansion, computed by
   propagating counts from the root down in topological order. Each unit appears once per
   network, so frequency = number of networks containing that occurrence.
4. Nodes are visited children-first. A terminal is a candidate when its frequency is > 1.
   A rule (frequency is always >= 2 by Sequitur's rule utility) is a candidate when no child
   is a dead end and its frequency equals the largest frequency among its children; its
   children are then unmarked (a longer block wins only when it is reused as often as its
   parts). Any other rule is a dead end, and so is every rule above a dead end.
   Marked nodes never nest (a marked node unmarks everything below it), so each network's
   parse is split into disjoint blocks plus units covered by none.
   So a multi-unit block needs each of its (unit, rate) symbols to occur, across the whole
   subspace, only inside that run. Size-spread or random subspaces almost never have that,
   and there Sequitur yields one block per (unit, rate), like "per-unit"; subspaces whose
   configurations share runs (onnxwootz.sampling.sample_profile_configurations) do.
5. A marked node whose rates are all 0 is dropped: it is the teacher's own layers, so a
   student of it has nothing to learn; its units are left uncovered (they take the teacher
   weights at assembly, which is exactly what a trained block would hold).
Two rules with the same expansion (Sequitur allows `(ab)c` beside `a(bc)`) give one block;
a block's frequency is the number of networks whose composite vector uses it.

Strategy "per-unit" (the paper's "one block per module" comparison): every (unit, rate)
pair with rate > 0 used by at least one network is a block; rate-0 pairs are excluded for
the reason in step 5, and a block used by a single network is kept because the strategy's
point is to pre-train every pruned module.

Groups: a memory-bound pre-training pass may hold only blocks that share no unit (the
paper's grouping step); greedy interval partitioning by start unit gives the fewest groups.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from onnxwootz.configs import load_configs, symbol, validate_configs
from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.results import Result

STRATEGIES = ("sequitur", "per-unit")

_Terminal = tuple[int, float]  # (unit index, rate)


@dataclass
class TuningBlock:
    """A run of consecutive units `start, start + 1, ...` at the given rates."""

    start: int
    rates: tuple[float, ...]
    symbols: list[str]
    frequency: int

    @property
    def stop(self) -> int:
        """One past the last unit the block covers."""
        return self.start + len(self.rates)


@dataclass
class CompositeVector:
    """How one network is assembled: its blocks in unit order, and the units (indices) that no
    block covers, which take the L1-pruned teacher weights."""

    blocks: list[int]
    uncovered: list[int]


@dataclass
class Grammar:
    """The Sequitur grammar in the paper's notation: `root` is rule r0's body with `|` for the
    end marker after each network; `rules` maps `rN` to its body; `frequency` is each rule's
    count in the full expansion."""

    root: list[str]
    rules: dict[str, list[str]]
    frequency: dict[str, int]


@dataclass
class BlockSet:
    """Blocks sorted by (start, length, rates); composites index into `blocks`; each group is a
    list of block indices no two of which share a unit."""

    blocks: list[TuningBlock]
    composites: list[CompositeVector]
    groups: list[list[int]]
    grammar: Grammar | None


@dataclass
class BlocksResult(Result):
    """What `onnxwootz blocks --json` prints."""

    blocks: list[TuningBlock]
    networks: list[CompositeVector]
    groups: list[list[int]]
    strategy: str
    units: list[str]
    grammar: Grammar | None

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for entry, block in zip(data["blocks"], self.blocks):
            entry["units"] = self.units[block.start:block.stop]
        return data


def blocks(configs: str | Path | Sequence[Sequence[float]], model: str | Path | None = None,
           strategy: str = "sequitur") -> BlocksResult:
    """Tuning blocks and composite vectors for a promising subspace (a CONFIGS.json path or
    the parsed list). With `model`, unit names and the unit count come from
    `onnxwootz.analysis.unit_names(model)`; otherwise units are numbered from 0."""
    _check_strategy(strategy)  # before the model analysis, which can be slow
    names: list[str] | None = None
    if model is not None:
        from onnxwootz.analysis import unit_names

        names = list(unit_names(model))
    if isinstance(configs, (str, Path)):
        configs = load_configs(configs, len(names) if names is not None else None)
    block_set = identify_blocks(configs, names, strategy)
    units = names if names is not None else [str(i) for i in range(len(configs[0]))]
    return BlocksResult(blocks=block_set.blocks, networks=block_set.composites, groups=block_set.groups,
                        strategy=strategy, units=units, grammar=block_set.grammar)


def identify_blocks(configs: Sequence[Sequence[float]], unit_names: Sequence[str] | None = None,
                    strategy: str = "sequitur") -> BlockSet:
    """Select tuning blocks with `strategy` ("sequitur" or "per-unit", see the module doc)."""
    _check_strategy(strategy)
    rows = validate_configs(list(configs), len(unit_names) if unit_names is not None else None)
    names = list(unit_names) if unit_names is not None else [str(i) for i in range(len(rows[0]))]
    if strategy == "per-unit":
        covers = [[((u,), (rate,)) for u, rate in enumerate(row) if rate > 0] for row in rows]
        grammar = None
    else:
        covers, grammar = _sequitur_covers(rows, names)
    block_list, composites = _index_blocks(covers, names)
    return BlockSet(blocks=block_list, composites=composites, groups=group_blocks(block_list), grammar=grammar)


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise BadSpecError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def group_blocks(block_list: Sequence[TuningBlock]) -> list[list[int]]:
    """Partition blocks into the fewest groups whose members share no unit (greedy interval
    partitioning: blocks by start, each into the group that freed up earliest)."""
    order = sorted(range(len(block_list)), key=lambda i: (block_list[i].start, block_list[i].stop, i))
    free: list[tuple[int, int]] = []  # (stop of the group's last block, group index)
    groups: list[list[int]] = []
    for index in order:
        block = block_list[index]
        if free and free[0][0] <= block.start:
            _, group = heapq.heappop(free)
        else:
            group = len(groups)
            groups.append([])
        groups[group].append(index)
        heapq.heappush(free, (block.stop, group))
    return [sorted(group) for group in groups]


# A cover is one network's partition in unit order: (unit indices, rates) per chosen block.
_Cover = list[tuple[tuple[int, ...], tuple[float, ...]]]


def _sequitur_covers(rows: list[list[float]], names: list[str]) -> tuple[list[_Cover], Grammar]:
    from sksequitur import Grammar as SequiturGrammar
    from sksequitur import Mark, Parser, Production

    sequence: list[Any] = []
    for index, row in enumerate(rows):
        sequence.extend(enumerate(row))
        sequence.append(Mark(network=index))
    parser = Parser()
    parser.feed(sequence)
    bodies: dict[int, list[Any]] = {int(p): body for p, body in SequiturGrammar(parser.tree).items()}

    def is_rule(value: Any) -> bool:
        return type(value) is Production

    order = _children_first(bodies, is_rule)
    frequency: dict[Any, int] = {0: 1}  # rules by number, terminals by (unit, rate)
    for rule in reversed(order):  # parents before children
        for value in bodies[rule]:
            if not isinstance(value, Mark):
                key = int(value) if is_rule(value) else value
                frequency[key] = frequency.get(key, 0) + frequency[rule]

    marked = {value for value in frequency if isinstance(value, tuple) and frequency[value] > 1}
    dead: set[int] = set()
    for rule in order[:-1]:  # children first; the root (last) is a network list, never a block
        children = {int(v) if is_rule(v) else v for v in bodies[rule]}
        if frequency[rule] > 1 and not children & dead and frequency[rule] == max(frequency[c] for c in children):
            marked.add(rule)
            marked -= children
        else:
            dead.add(rule)

    expansion: dict[int, list[_Terminal]] = {}
    for rule in order[:-1]:
        expansion[rule] = [t for v in bodies[rule] for t in (expansion[int(v)] if is_rule(v) else [v])]

    covers: list[_Cover] = [[]]
    for value in bodies[0]:
        if isinstance(value, Mark):
            covers.append([])
            continue
        stack = [value]
        while stack:
            node = stack.pop()
            key = int(node) if is_rule(node) else node
            if key in marked:
                terminals = expansion[key] if is_rule(node) else [node]
                if any(rate > 0 for _, rate in terminals):
                    covers[-1].append((tuple(u for u, _ in terminals), tuple(r for _, r in terminals)))
                    continue
            if is_rule(node):
                stack.extend(reversed(bodies[key]))
    covers.pop()  # the empty list opened after the last end marker

    def show(value: Any) -> str:
        if isinstance(value, Mark):
            return "|"
        return f"r{int(value)}" if is_rule(value) else symbol(names[value[0]], value[1])

    grammar = Grammar(root=[show(v) for v in bodies[0]],
                      rules={f"r{rule}": [show(v) for v in bodies[rule]] for rule in sorted(order[:-1])},
                      frequency={f"r{rule}": frequency[rule] for rule in sorted(order[:-1])})
    return covers, grammar


def _children_first(bodies: dict[int, list[Any]], is_rule: Callable[[Any], bool]) -> list[int]:
    """Rules in post-order from the root (rule 0, which comes last); iterative, since deep
    grammars would overflow Python's recursion limit."""
    order: list[int] = []
    seen = {0}
    stack: list[tuple[int, int]] = [(0, 0)]
    while stack:
        rule, position = stack.pop()
        body = bodies[rule]
        while position < len(body) and not (is_rule(body[position]) and int(body[position]) not in seen):
            position += 1
        if position == len(body):
            order.append(rule)
            continue
        child = int(body[position])
        seen.add(child)
        stack.append((rule, position + 1))
        stack.append((child, 0))
    return order


def _index_blocks(covers: list[_Cover], names: list[str]) -> tuple[list[TuningBlock], list[CompositeVector]]:
    """Turn per-network covers into a sorted, de-duplicated block list and composite vectors;
    a block's frequency is the number of networks using it."""
    counts: dict[tuple[int, tuple[float, ...]], int] = {}
    for cover in covers:
        for units, rates in cover:
            key = (units[0], rates)
            counts[key] = counts.get(key, 0) + 1
    keys = sorted(counts, key=lambda k: (k[0], len(k[1]), k[1]))
    index = {key: i for i, key in enumerate(keys)}
    block_list = [TuningBlock(start=start, rates=rates, frequency=counts[(start, rates)],
                              symbols=[symbol(names[start + i], rate) for i, rate in enumerate(rates)])
                  for start, rates in keys]
    composites = []
    for cover in covers:
        covered = {u for units, _ in cover for u in units}
        composites.append(CompositeVector(blocks=[index[(units[0], rates)] for units, rates in cover],
                                          uncovered=[u for u in range(len(names)) if u not in covered]))
    return block_list, composites
