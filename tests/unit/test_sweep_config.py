"""The sweep: section (validation with file:line), search-space expansion, seeded trials, and the
ordered ASHA decisions — all without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenir.core.errors import ConfigError
from provenir.core.sweep_config import expand_trials, load_sweep, parse_dimension
from provenir.distributed.sweep_scheduler import CONTINUE, STOP, WAIT, OrderedHalving, rungs, trial_index

BASE = """\
name: lr-rank
backend: trl
seed: 7
model_name_or_path: {model}
max_steps: 8
data:
  train_path: train.jsonl
  eval_path: eval.jsonl
  template: chatml
peft:
  rank: 4
"""

SECTION = """\
sweep:
  metric: eval_loss
  search: {search}
  eval_steps: 2
  search_space:
{space}
"""


def _write(tmp_path: Path, space: str, search: str = "grid", base: str = BASE) -> Path:
    for name in ("train.jsonl", "eval.jsonl"):
        (tmp_path / name).write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(base.format(model=tmp_path) + SECTION.format(search=search, space=space))
    return path


def test_grid_expands_in_written_order_and_names_trials(tmp_path):
    spec = load_sweep(_write(tmp_path, "    training.learning_rate: [0.001, 0.01]\n    peft.rank: {grid: [4, 8]}"))
    trials = expand_trials(spec.sweep, spec.seed)
    assert trials == [
        {"training.learning_rate": 0.001, "peft.rank": 4}, {"training.learning_rate": 0.001, "peft.rank": 8},
        {"training.learning_rate": 0.01, "peft.rank": 4}, {"training.learning_rate": 0.01, "peft.rank": 8},
    ]
    config = spec.trial_config(trials[3], 3)
    assert (config.name, config.peft.rank, config.training.learning_rate) == ("lr-rank-t03", 8, 0.01)
    assert spec.seed == 7 and spec.best_config(trials[0]).name == "lr-rank-best"


def test_random_search_is_seeded_and_reproducible(tmp_path):
    space = ("    training.learning_rate: {loguniform: [0.0001, 0.01]}\n    peft.rank: [4, 8]\n"
             "    peft.dropout: {uniform: [0.0, 0.2]}\n    training.warmup_steps: {randint: [0, 3]}\n"
             "    peft.target_modules: {choice: [[q_proj, v_proj], [all-linear]]}")
    path = _write(tmp_path, space, search="random")
    text = path.read_text().replace("search: random", "search: random\n  num_samples: 3")
    path.write_text(text)
    spec = load_sweep(path)
    first, again = expand_trials(spec.sweep, spec.seed), expand_trials(load_sweep(path).sweep, spec.seed)
    assert first == again and len(first) == 6  # 3 samples × the 2-point grid
    assert [t["peft.rank"] for t in first] == [4, 8, 4, 8, 4, 8]
    assert all(1e-4 <= t["training.learning_rate"] <= 1e-2 and 0 <= t["training.warmup_steps"] < 3 for t in first)
    assert len({t["training.learning_rate"] for t in first}) == 6
    assert expand_trials(spec.sweep, spec.seed + 1) != first
    for i, params in enumerate(first):
        spec.trial_config(params, i)  # every sampled trial is a valid run config


def test_optuna_expands_nothing_up_front(tmp_path):
    spec = load_sweep(_write(tmp_path, "    peft.rank: {choice: [4, 8]}", search="optuna"))
    assert expand_trials(spec.sweep, spec.seed) is None


@pytest.mark.parametrize(("space", "search", "expected"), [
    ("    peft.rank: [0, 4]", "grid", r"sweep\.yaml:17: sweep\.search_space\.peft\.rank: value 0: must be >= 1"),
    ("    peft.rnk: [4]", "grid", r":17: sweep\.search_space\.peft\.rnk: not a run-config key; did you mean 'peft\.rank'"),
    ("    data.template: [alpaca]", "grid", r":17: .*data\.template: cannot be varied"),
    ("    training.learning_rate: {loguniform: [0.1, 0.01]}", "random", r":17: .*loguniform: low must be < high"),
    ("    training.learning_rate: {loguniform: [0, 0.01]}", "random", r"loguniform: bounds must be > 0"),
    ("    training.warmup_steps: {randint: [3, 3]}", "random", r"randint: \[low, high\) holds no integer"),
    ("    peft.rank: {gird: [4]}", "grid", r"unknown kind 'gird'; did you mean 'grid'"),
    ("    peft.rank: {choice: [4, 8]}", "grid", r"search: grid runs grids only"),
    ("    peft.rank: [4, 8]", "optuna", r"search: optuna samples, it runs no grid"),
    ("    peft.dropout: {uniform: [0.5, 1.5]}", "random", r"value 1\.5: must be in \[0, 1\)"),
])
def test_bad_search_spaces_name_file_line_and_key(tmp_path, space, search, expected):
    with pytest.raises(ConfigError, match=expected):
        load_sweep(_write(tmp_path, space, search=search))


def test_bad_section_keys_and_values_name_their_lines(tmp_path):
    path = _write(tmp_path, "    peft.rank: [4]")
    path.write_text(path.read_text().replace("  eval_steps: 2", "  eval_steps: 0\n  schedular: asha\n  metric_: x"))
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    assert "sweep.yaml:15: sweep.eval_steps: must be >= 1 (got 0)" in message
    assert "sweep.yaml:16: sweep.schedular: unknown key; allowed keys here:" in message and "scheduler" in message
    path.write_text(path.read_text().replace("metric: eval_loss", "metric: eval_los")
                    .replace("  eval_steps: 0\n  schedular: asha\n  metric_: x\n", "  scheduler: {type: hyperband}\n"))
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert "sweep.yaml:13: sweep.metric: unknown metric 'eval_los'; did you mean 'eval_loss'?" in str(info.value)
    assert "sweep.scheduler.type: unknown scheduler 'hyperband'; allowed: asha, fifo" in str(info.value)


def test_base_run_errors_keep_their_lines_and_eval_data_is_required(tmp_path):
    path = _write(tmp_path, "    peft.rank: [4]")
    path.write_text(path.read_text().replace("  rank: 4", "  rank: 0"))
    with pytest.raises(ConfigError, match=r"sweep\.yaml:11: peft\.rank: must be >= 1"):
        load_sweep(path)
    path = _write(tmp_path, "    peft.rank: [4]", base=BASE.replace("  eval_path: eval.jsonl\n", ""))
    with pytest.raises(ConfigError, match=r"data\.eval_path: required: trials are compared on eval_loss"):
        load_sweep(path)
    path = _write(tmp_path, "    peft.rank: [4]", base=BASE.replace("backend: trl", "backend: stub"))
    with pytest.raises(ConfigError, match=r"sweep\.yaml:2: backend: a sweep trains with the trl backend"):
        load_sweep(path)
    grpo = BASE + "training:\n  method: grpo\n  rewards:\n    - name: exact_match\n"
    path = _write(tmp_path, "    peft.rank: [4]", base=grpo)
    with pytest.raises(ConfigError, match=r"sweep\.yaml:\d+: training\.method: a sweep compares trials on the eval set"):
        load_sweep(path)


def test_a_sweep_file_can_name_its_base_config(tmp_path):
    inline = _write(tmp_path, "    peft.rank: [4, 8]")
    base_text, section = inline.read_text().split("sweep:\n", 1)
    (tmp_path / "run.yaml").write_text(base_text)
    sweep_file = tmp_path / "only-sweep.yaml"
    sweep_file.write_text("base: run.yaml\nsweep:\n" + section)
    spec = load_sweep(sweep_file, overrides={"seed": 9})
    assert spec.base.seed == 9 and spec.base_source == str(tmp_path / "run.yaml")
    assert expand_trials(spec.sweep, spec.seed) == [{"peft.rank": 4}, {"peft.rank": 8}]
    sweep_file.write_text("base: run.yaml\nmax_steps: 3\nsweep:\n" + section)
    with pytest.raises(ConfigError, match=r"only-sweep\.yaml:2: max_steps: a sweep file with `base:` holds only"):
        load_sweep(sweep_file)
    (tmp_path / "no-sweep.yaml").write_text(base_text)
    with pytest.raises(ConfigError, match=r"no-sweep\.yaml:1: a sweep file needs a `sweep:` section"):
        load_sweep(tmp_path / "no-sweep.yaml")


def test_resolved_sweep_reloads_to_the_same_trials(tmp_path):
    spec = load_sweep(_write(tmp_path, "    training.learning_rate: [0.001, 0.01]"))
    again = tmp_path / "again.yaml"
    again.write_text(spec.to_yaml())
    reloaded = load_sweep(again)
    assert reloaded.base == spec.base and expand_trials(reloaded.sweep, reloaded.seed) == expand_trials(spec.sweep, spec.seed)


def test_parse_dimension_shorthand():
    assert parse_dimension("peft.rank", [4, 8]).kind == "grid"
    assert parse_dimension("x", {"randint": [1, 4]}).candidates() == [1, 3]
    with pytest.raises(ValueError, match="lists a value twice"):
        parse_dimension("peft.rank", [4, 4])


# -- ordered ASHA ---------------------------------------------------------------------------------


def test_rungs_stop_below_the_last_evaluation():
    assert rungs(1, 2, 4) == [1, 2]
    assert rungs(1, 3, 10) == [1, 3, 9]
    assert rungs(4, 2, 4) == []


def test_ordered_halving_matches_sequential_asha():
    halving = OrderedHalving(milestones=[2, 4], reduction_factor=2, mode="min")
    assert [halving.report(0, s, v) for s, v in [(2, 5.0), (4, 4.0), (6, 3.5)]] == [CONTINUE] * 3
    halving.end(0)
    assert halving.report(1, 2, 6.0) == STOP  # worse than trial 0 at the first rung
    halving.end(1)
    assert halving.report(2, 2, 4.5) == CONTINUE
    assert halving.report(2, 4, 4.2) == STOP  # cutoff at rung 4: only trial 0 reached it (4.0)
    halving.end(2)
    assert halving.report(3, 2, 4.9) == CONTINUE  # median of 5.0, 6.0, 4.5 is 5.0; 4.9 is better


def test_ordered_halving_holds_a_later_trial_until_earlier_ones_reach_the_rung():
    interleaved = OrderedHalving(milestones=[2], reduction_factor=2, mode="max")
    assert interleaved.report(1, 2, 0.2) == WAIT  # trial 0 has not reached step 2 yet
    assert interleaved.ready() == []
    assert interleaved.report(0, 2, 0.5) == CONTINUE
    assert interleaved.ready() == [(1, STOP)]  # decided as if trial 0 had come first
    sequential = OrderedHalving(milestones=[2], reduction_factor=2, mode="max")
    sequential.report(0, 2, 0.5)
    assert sequential.report(1, 2, 0.2) == STOP
    ended_early = OrderedHalving(milestones=[2, 4], reduction_factor=2, mode="max")
    ended_early.report(0, 2, 0.5)
    assert ended_early.report(1, 4, 0.9) == WAIT  # trial 0 may still reach step 4
    ended_early.end(0)  # …it ended before: nothing to compare at step 4
    assert ended_early.ready() == [(1, CONTINUE)]


def test_trial_index_reads_tunes_counter():
    assert trial_index("a1b2c3d4_00003") == 3
