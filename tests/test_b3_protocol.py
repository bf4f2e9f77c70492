"""B3's second protocol: each cell is the command a user would type (the fair baseline with its
least-squares start and distillation, the abandon rule switched off by the spec, the pool
removed for "same images"), and the summary reads medians and ranges over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.b3_protocol import cell_command, key, same_images, summary


def _npz(tmp_path: Path) -> str:
    path = tmp_path / "task.npz"
    np.savez(path, x_train=np.zeros((4, 1, 2, 2), np.float32), y_train=np.arange(4),
             x_val=np.zeros((2, 1, 2, 2), np.float32), y_val=np.arange(2),
             x_unlabeled=np.ones((6, 1, 2, 2), np.float32))
    return str(path)


def test_cells_are_the_prune_commands_of_each_mode_and_setting(tmp_path: Path) -> None:
    data = _npz(tmp_path)
    method = cell_command("t.onnx", data, "method", "defaults", 1, 0.01, tmp_path)
    assert method[:5] == ["onnxwootz", "prune", "t.onnx", "--data", data]
    assert "--fresh" in method and "--json" in method and "--baseline" not in method
    assert method[method.index("--seed") + 1] == "1"
    assert method[method.index("--constraint") + 1] == "accuracy >= teacher - 0.01"
    fair = cell_command("t.onnx", data, "fair", "defaults", 0, 0.01, tmp_path)
    assert fair[-5:] == ["--baseline", "--pretrain-init", "lsq", "--finetune-loss", "kd"]
    assert cell_command("t.onnx", data, "baseline", "defaults", 0, 0.01, tmp_path)[-1] == "--baseline"
    wide = cell_command("t.onnx", data, "method", "candidates=64", 0, 0.01, tmp_path)
    assert wide[wide.index("--candidates") + 1] == "64"
    no_abandon = cell_command("t.onnx", data, "method", "abandon=off", 0, 0.01, tmp_path)
    assert Path(no_abandon[no_abandon.index("--spec") + 1]).read_text() == "finetune_patience = 0\n"
    frozen = cell_command("t.onnx", data, "fair", "bn=frozen", 0, 0.01, tmp_path)
    assert frozen[-2:] == ["--finetune-bn", "frozen"] and "--baseline" in frozen
    same = cell_command("t.onnx", data, "method", "images=same", 0, 0.01, tmp_path)
    with np.load(same[4]) as archive:
        assert sorted(archive.files) == ["x_train", "x_val", "y_train", "y_val"]
    assert same_images(data, tmp_path) == same[4]
    combined = cell_command("t.onnx", data, "method", "loss=kd+lr=3e-5+abandon=off", 0, 0.01, tmp_path)
    assert combined[combined.index("--finetune-loss") + 1] == "kd"
    assert Path(combined[combined.index("--spec") + 1]).read_text() == "finetune_patience = 0\nfinetune_lr = 3e-05\n"
    margin = cell_command("t.onnx", data, "fair", "margin=0+lr=1e-4", 0, 0.01, tmp_path)
    assert Path(margin[margin.index("--spec") + 1]).read_text() == "bound_margin = 0.0\nfinetune_lr = 0.0001\n"
    held = cell_command("t.onnx", data, "method", "confirm=0+projection=on", 0, 0.01, tmp_path)
    assert Path(held[held.index("--spec") + 1]).read_text() == "finetune_projection = true\nconfirm_fraction = 0.0\n"
    short = cell_command("t.onnx", data, "method", "pretrain=100", 0, 0.01, tmp_path)
    assert short[short.index("--pretrain-steps") + 1] == "100" and "--spec" not in short
    for bad in ("images=more", "lr=fast", "margin=wide", "loss=kd+bn=thawed", "projection=maybe", "pretrain=1.5"):
        with pytest.raises(SystemExit, match="unknown setting"):
            cell_command("t.onnx", data, "method", bad, 0, 0.01, tmp_path)


def test_summary_gives_medians_ranges_and_the_ratio_to_the_method() -> None:
    def cell(wall: float, params: int | None, test: float | None, ok: bool) -> dict:
        return {"wall_seconds": wall, "params": params, "teacher_params": 100, "test_accuracy": test,
                "within_bound_on_test": ok, "assembly_median": 0.9, "finetune_gain_median": 0.01}

    cells = {key("g", "defaults", "method", s): cell(w, 50, 0.95, True) for s, w in enumerate((10.0, 12.0, 30.0))}
    cells |= {key("g", "defaults", "baseline", s): cell(w, None, None, False) for s, w in enumerate((100.0, 120.0))}
    rows, table = summary(cells, ["g"], ["defaults"], ["method", "baseline", "fair"], [0, 1, 2])
    method, baseline = rows
    assert method["wall_seconds_median"] == 12.0 and method["wall_vs_method"] == 1.0
    assert baseline["seeds"] == 2 and baseline["wall_vs_method"] == pytest.approx(110.0 / 12.0)
    assert method["within_bound_on_test"] == 3 and baseline["within_bound_on_test"] == 0
    assert "| g | defaults | method | 3 | 12.0 [10.0, 30.0] | 50 [50, 50] |" in table
    assert "| 100 [100, 100] | none | 0/2 |" in table
    assert "fair" not in table
