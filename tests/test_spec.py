"""The pruning spec: defaults validate, TOML and overrides layer in order, and every bad value
is one BadSpecError line that names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxwootz.core.errors import BadSpecError
from onnxwootz.spec import CHOICES, Spec, load_spec


def test_defaults_validate_and_overrides_win_over_the_file(tmp_path: Path) -> None:
    assert load_spec() == Spec().validate()
    path = tmp_path / "spec.toml"
    path.write_text('[prune]\nfinetune_loss = "kd"\npretrain_steps = 50\n')
    spec = load_spec(path, pretrain_steps=70, finetune_loss=None)
    assert spec.finetune_loss == "kd" and spec.pretrain_steps == 70


@pytest.mark.parametrize("field", sorted(CHOICES))
def test_a_word_outside_the_choices_is_refused(field: str) -> None:
    with pytest.raises(BadSpecError, match=rf"^{field} must be '.*', got 'nonsense'$"):
        load_spec(**{field: "nonsense"})


@pytest.mark.parametrize("overrides, fragment", [
    ({"rates": [0.5, 1.0]}, "rates must be numbers in"),
    ({"candidates": 0}, "candidates must be >= 1"),
    ({"eval_every": 0}, "eval_every must be positive"),
    ({"constraint": "accuracy > 3"}, "constraint must read"),
    ({"objective": "max size"}, "objective must be"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_values_are_one_line_spec_errors(overrides: dict, fragment: str) -> None:
    with pytest.raises(BadSpecError, match=fragment) as caught:
        load_spec(**overrides)
    assert "\n" not in str(caught.value)


def test_users_model_fields_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('[prune]\nmetric = "map_iou@0.5"\ninput_shape = [1, 3, 64, 64]\nconstraint = "map_iou@0.5 >= 0.8"\n'
                    '[prune.preprocess]\nsize = [64, 64]\nchannels = 3\nscale = 0.00392\nmean = [0.5]\nstd = [0.5]\n')
    spec = load_spec(path)
    assert spec.metric_name() == "map_iou@0.5" and spec.input_shape == [1, 3, 64, 64]
    assert json.loads(spec.preprocess)["size"] == [64, 64]
    assert load_spec().finetune_loss is None  # chosen by loss(): kd, ce for the baseline on class labels
    assert load_spec().loss(class_labels=True) == "kd"
    assert load_spec(baseline=True).loss(class_labels=True) == "ce"
    assert load_spec(baseline=True).loss(class_labels=False) == "kd"
    assert load_spec(baseline=True, finetune_loss="kd").loss(class_labels=True) == "kd"
    for bad, fragment in (({"input_shape": [1, 0, 8]}, "input_shape must be positive"),
                          ({"metric": "iou"}, "unknown metric 'iou'")):
        with pytest.raises(BadSpecError, match=fragment):
            load_spec(**bad)


def test_training_configs_carry_the_spec_and_each_candidate_has_its_own_seed() -> None:
    spec = load_spec(pretrain_steps=7, pretrain_lr=0.5, finetune_steps=9, finetune_lr=0.25, batch=4, eval_every=3,
                     finetune_patience=2, finetune_projection=True, seed=5)
    pretrain = spec.pretrain_config()
    assert (pretrain.steps, pretrain.batch, pretrain.lr, pretrain.weight_decay, pretrain.seed) == (
        7, 4, 0.5, spec.pretrain_weight_decay, 5)
    first, second = spec.finetune_config(0), spec.finetune_config(1)
    assert (first.steps, first.batch, first.lr, first.weight_decay, first.eval_every, first.patience,
            first.projection) == (9, 4, 0.25, spec.finetune_weight_decay, 3, 2, True)
    assert load_spec().finetune_config(0).projection and not load_spec(finetune_projection=False).finetune_config(0).projection
    with pytest.raises(BadSpecError, match="finetune_projection must be true or false"):
        load_spec(finetune_projection="yes")
    assert first.seed != second.seed and spec.finetune_config(1) == second


def test_finetune_bn_reaches_the_finetune_config_and_a_bad_word_is_one_error() -> None:
    assert load_spec().finetune_config(0).frozen_statistics is False
    assert load_spec(finetune_bn="frozen").finetune_config(3).frozen_statistics is True
    with pytest.raises(BadSpecError, match="finetune_bn"):
        load_spec(finetune_bn="running")


def test_profile_init_is_l1_unless_asked_and_a_bad_word_is_one_error() -> None:
    assert load_spec().profile_init == "l1"
    assert load_spec(profile_init="lsq").profile_init == "lsq"
    with pytest.raises(BadSpecError, match="profile_init"):
        load_spec(profile_init="refit")


@pytest.mark.parametrize("bad", [0, -1.0, "3", True])
def test_profile_budget_is_off_unless_asked_and_must_be_a_positive_number(bad) -> None:
    assert load_spec().profile_budget is None
    assert load_spec(profile_budget=4).profile_budget == 4
    with pytest.raises(BadSpecError, match="profile_budget must be a positive number"):
        load_spec(profile_budget=bad)


def test_weights_start_from_least_squares_for_the_method_and_l1_for_the_baseline_unless_asked() -> None:
    assert load_spec().start() == "lsq"
    assert load_spec(baseline=True).start() == "l1"
    assert load_spec(baseline=True, pretrain_init="lsq").start() == "lsq"
    assert load_spec(pretrain_init="l1").start() == "l1"
    with pytest.raises(BadSpecError, match="pretrain_init"):
        load_spec(pretrain_init="zero")


@pytest.mark.parametrize("bad", [-1, "1", True, float("nan")])
def test_bound_margin_is_one_standard_error_by_default_and_a_number_at_least_zero(bad) -> None:
    assert load_spec().bound_margin == 1.0 and load_spec(bound_margin=0).bound_margin == 0
    with pytest.raises(BadSpecError, match="bound_margin must be a number >= 0"):
        load_spec(bound_margin=bad)


@pytest.mark.parametrize("bad", [-0.1, 1, 1.5, "0.5", True, float("nan")])
def test_confirm_fraction_holds_out_half_of_val_by_default_and_is_below_one(bad) -> None:
    assert load_spec().confirm_fraction == 0.5 and load_spec(confirm_fraction=0).confirm_fraction == 0
    with pytest.raises(BadSpecError, match=r"confirm_fraction must be a number in \[0, 1\)"):
        load_spec(confirm_fraction=bad)
