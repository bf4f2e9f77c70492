"""PLAN.json's `slices`: the cuts of a canonical model written in the input model's names, and
read back onto a canonical model of that input.

Schema 2 (written): a list of entries `{"tensor": t, "axis": a, "keep": [i, ...]}`, plus
`"consumer": {"name": n}` or `{"output": o}` when the cut applies only to what that node reads
(a tensor several nodes read, cut differently for each). `t` is a tensor name of the input
model; `n` a node name that is unique in the input; `o` the first output of the node in the
input (for nodes without a name or with a shared one: outputs are unique, and survive the
opset upgrade on load and node reordering, which indices do not). No separator is parsed.

Schema 1 (read only): `{"<tensor>": [{"axis": a, "keep": [...]}, ...]}`, where a tensor cut per
consumer is keyed `<tensor>@<canonical node name>`; a key that reads both ways is refused."""

from __future__ import annotations

from typing import Any

import onnx

from onnxwootz.core.errors import BadSpecError
from onnxwootz.passes.canonicalize import node_origins, shared_origins
from onnxwootz.passes.graph_index import GraphIndex

PLAN_SCHEMA = 2
Slices = dict[str, list[dict]]  # canonical initializer name -> [{axis, keep}]


def _copies(model: onnx.ModelProto) -> dict[str, dict[str, str]]:
    """Input tensor -> {canonical consumer node -> its private copy}."""
    index = GraphIndex(model)
    copies: dict[str, dict[str, str]] = {}
    for private, origin in shared_origins(model).items():
        for node in index.consumers.get(private, []):
            copies.setdefault(origin, {})[node.name] = private
    return copies


def _node_ref(origins: dict[str, str], name: str) -> dict[str, str]:
    return {"output": origins[name]} if name in origins else {"name": name}


def plan_entries(model: onnx.ModelProto, slices: Slices) -> list[dict]:
    """Schema-2 entries for the cuts `slices` made to canonical `model`: a tensor whose
    private copies were all cut alike is one entry without a consumer."""
    copies = _copies(model)
    consumer_of = {private: node for by_node in copies.values() for node, private in by_node.items()}
    origin_of = shared_origins(model)
    origins = node_origins(model)
    entries: list[dict] = []
    written: set[str] = set()
    for name, cuts in slices.items():
        origin = origin_of.get(name)
        if origin is None:
            entries += [{"tensor": name, **cut} for cut in cuts]
            continue
        if origin in written:
            continue
        siblings = copies[origin].values()
        if all(slices.get(sibling) == cuts for sibling in siblings):
            entries += [{"tensor": origin, **cut} for cut in cuts]
            written.add(origin)
        else:
            consumer = _node_ref(origins, consumer_of[name])
            entries += [{"tensor": origin, "consumer": consumer, **cut} for cut in cuts]
    return entries


def plan_slices(model: onnx.ModelProto, plan: list[dict] | dict[str, list[dict]]) -> Slices:
    """The cuts a plan's `slices` (schema 2 list, or schema 1 mapping) make to canonical `model`,
    by its initializer names; BadSpecError when the plan names what the model lacks."""
    if isinstance(plan, dict):
        return _schema1_slices(model, plan)
    if not isinstance(plan, list):
        raise BadSpecError("PLAN.json 'slices' must be a list of entries (schema 2) or an object (schema 1)")
    initializers = {init.name: list(init.dims) for init in model.graph.initializer}
    copies = _copies(model)
    renamed = node_origins(model)
    by_output = {output: name for name, output in renamed.items()}
    readers = {name: {node.name for node in nodes} for name, nodes in GraphIndex(model).consumers.items()}
    slices: Slices = {}
    for entry in plan:
        if not isinstance(entry, dict) or not isinstance(entry.get("tensor"), str) \
                or set(entry) - {"tensor", "consumer", "axis", "keep"}:
            raise BadSpecError(f"PLAN.json slice entry {entry!r} is not {{tensor, [consumer], axis, keep}}")
        tensor, ref = entry["tensor"], entry.get("consumer")
        if "consumer" not in entry:
            if tensor not in copies and tensor not in initializers:
                raise BadSpecError(f"PLAN.json cuts tensor '{tensor}', which the model does not have as a weight")
            targets = list(copies[tensor].values()) if tensor in copies else [tensor]
        else:
            if isinstance(ref, dict) and set(ref) == {"output"} and isinstance(ref["output"], str):
                node = by_output.get(ref["output"])
            elif isinstance(ref, dict) and set(ref) == {"name"} and isinstance(ref["name"], str):
                node = None if ref["name"] in renamed else ref["name"]
            else:
                raise BadSpecError(f"PLAN.json consumer {ref!r} is not {{\"name\": node}} or {{\"output\": tensor}}")
            target = copies.get(tensor, {}).get(node) or (tensor if node in readers.get(tensor, ()) else None)
            if target is None or target not in initializers:
                raise BadSpecError(f"PLAN.json cuts tensor '{tensor}' for consumer {ref!r}, which does not read it")
            targets = [target]
        for target in targets:
            slices.setdefault(target, []).append(_cut(entry, initializers[target]))
    return slices


def _cut(entry: Any, dims: list[int]) -> dict:
    """{axis, keep} of a plan entry, checked against the dims of the tensor it cuts."""
    axis, keep = (entry.get("axis"), entry.get("keep")) if isinstance(entry, dict) else (None, None)
    if not isinstance(axis, int) or isinstance(axis, bool) or not isinstance(keep, list) \
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in keep):
        raise BadSpecError(f"PLAN.json cut {entry!r} needs an integer axis and a list of kept indices")
    if not 0 <= axis < len(dims) or any(not 0 <= i < dims[axis] for i in keep):
        raise BadSpecError(f"PLAN.json cut {{axis {axis}, keep ...}} does not fit a tensor of shape {dims}")
    return {"axis": axis, "keep": keep}


def _schema1_slices(model: onnx.ModelProto, plan: dict[str, list[dict]]) -> Slices:
    """Schema 1: a key is a weight, a shared tensor (all its copies), or `<tensor>@<consumer>`
    (one copy); a key that reads more than one of these ways is ambiguous."""
    initializers = {init.name: list(init.dims) for init in model.graph.initializer}
    copies = _copies(model)
    privates = set(shared_origins(model))
    slices: Slices = {}
    for key, cuts in plan.items():
        readings = [[key]] if key in initializers and key not in privates else []
        readings += [list(copies[key].values())] if key in copies else []
        readings += [[copies[key[:at]][key[at + 1:]]] for at in range(len(key)) if key[at] == "@"
                     and key[at + 1:] in copies.get(key[:at], {})]
        if len(readings) > 1:
            raise BadSpecError(f"PLAN.json (schema 1) key '{key}' is ambiguous: it reads as a tensor and as "
                               f"a tensor one node reads ('<tensor>@<node>'); write the plan again (schema 2)")
        if not readings:
            raise BadSpecError(f"PLAN.json (schema 1) names tensor '{key}', which the model does not have")
        if not isinstance(cuts, list):
            raise BadSpecError(f"PLAN.json (schema 1) entry of '{key}' must be a list of {{axis, keep}}")
        for target in readings[0]:
            slices[target] = [_cut(cut, initializers[target]) for cut in cuts]
    return slices
