"""Every default stands in one place, configs/base.yaml: the schema declares keys and types only, and no role,
algorithm or command-line option restates a value of its own."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from helpers import ROOT, base_config
from launch.trainer import config as schema
from launch.trainer.config import CHOICES, MISSING, flatten, load_config

# Folders whose code takes the config: roles, backends, rewards, data handling, evaluation, entry points.
SCANNED = ("actors", "rollouts", "rewards", "qadata", "evaluation", "launch")
# Names that coincide with a config option but are not one, with the reason.
NOT_OPTIONS = {
    ("models/tiny_model.py", "warm_up"): "the test model's supervised warm-up, before any run",
    ("models/tiny_model.py", "TinyModelSpec"): "the test model's architecture and its init seed",
    ("launch/prepare.py", "prepare"): "the tiny model's warm-up (make prepare), not a run option",
    ("qadata/benchmark_set.py", "generate_benchmark"): "the generated data set's own seed",
}


def option_names() -> set[str]:
    return {key.rsplit(".", 1)[-1] for key in flatten(load_config())}


def test_the_schema_holds_no_values_and_base_yaml_gives_every_key_one():
    stack = [schema.Config]
    while stack:
        current = stack.pop()
        for f in dataclasses.fields(current):
            nested = getattr(schema, str(f.type), None)
            if dataclasses.is_dataclass(nested):
                stack.append(nested)
            else:
                assert f.default == MISSING, f"{current.__name__}.{f.name} has a value in the schema: {f.default!r}"
    assert not [key for key, value in flatten(load_config()).items() if value == MISSING]


def restated_defaults() -> list[str]:
    """Every parameter or dataclass field named like a config option that carries a value of its own."""
    names, found = option_names(), []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text())):
                pairs = []
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    positional = node.args.posonlyargs + node.args.args
                    pairs += list(zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults))
                    pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
                    pairs = [(a.arg, d) for a, d in pairs]
                elif isinstance(node, ast.ClassDef) and rel != "launch/trainer/config.py":
                    pairs = [(s.target.id, s.value) for s in node.body if isinstance(s, ast.AnnAssign)
                             and s.value is not None and isinstance(s.target, ast.Name)]
                else:
                    continue
                if (rel, node.name) in NOT_OPTIONS:
                    continue
                for name, default in pairs:
                    # None is "not given" (the caller's config decides), never a second value
                    if name in names and not (isinstance(default, ast.Constant) and default.value is None):
                        found.append(f"{rel}:{default.lineno} {node.name}: {name} = {ast.unparse(default)}")
    return found


def test_no_role_or_algorithm_restates_a_config_default():
    assert restated_defaults() == []


def test_the_scan_finds_a_restated_default(tmp_path, monkeypatch):
    """The scan above is not vacuous: a planted `temperature=1.0` is found."""
    planted = ROOT / "rollouts" / "planted_default_for_test.py"
    planted.write_text("def sample(prompts, temperature=1.0):\n    return prompts\n")
    try:
        assert [f for f in restated_defaults() if "planted_default_for_test.py" in f] == [
            "rollouts/planted_default_for_test.py:1 sample: temperature = 1.0"]
    finally:
        planted.unlink()


def test_settings_are_built_from_the_config_and_follow_it():
    from actors.learner import LearnerSettings
    from qadata.video import VideoSettings
    from rewards.prpo import PRPOWeights
    from rollouts.backend import SamplingSettings

    cfg = base_config("learner.lr=3e-5", "algorithm.kl_coef=0.5", "reward.pairwise=0.25", "video.local_frames=2",
                      "rollout.top_k=7", "eval.max_new_tokens=99")
    learner = LearnerSettings.from_config(cfg)
    assert (learner.lr, learner.kl_coef, learner.dtype, learner.zero_stage) == (3e-5, 0.5, "bfloat16", 3)
    assert PRPOWeights.from_config(cfg.reward).pairwise == 0.25
    assert VideoSettings(**cfg.video).local_frames == 2
    assert SamplingSettings.training(cfg.rollout, 5).top_k == 7
    assert SamplingSettings.evaluation(cfg.eval, cfg.rollout, 5).max_new_tokens == 99
    for cls in (LearnerSettings, PRPOWeights, VideoSettings, SamplingSettings):
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(cls)), cls


def cli_parser(name: str):
    import argparse

    from evaluation.scoring_args import add_scoring_args

    p = argparse.ArgumentParser(prog=name)
    add_scoring_args(p)
    return p


@pytest.mark.parametrize("config_file", [None, "configs/local.yaml"])
@pytest.mark.parametrize("command", ["evaluate", "score"])
def test_scoring_commands_take_their_defaults_from_the_config(command, config_file, tmp_path):
    import importlib

    module = importlib.import_module(f"launch.{command}")
    argv = ["--model", str(tmp_path / "model")] + (["--config", str(ROOT / config_file)] if config_file else [])
    argv += ["--manifest", "m.parquet"] if command == "evaluate" else ["x.png", "--output", "s.csv"]
    args = module.parse_args(argv)
    expected = load_config(ROOT / config_file if config_file else None)
    got = flatten(args.cfg)
    assert got.pop("model.path") == str(tmp_path / "model")
    expected_flat = flatten(expected)
    expected_flat.pop("model.path")
    assert got == expected_flat
    # Every shared option defaults to None ("the config's value") and sets exactly its key.
    from evaluation.scoring_args import OPTION_KEYS

    parser = cli_parser(command)
    for dest, (key, _, _) in OPTION_KEYS.items():
        assert parser.get_default(dest) is None, dest
        assert key in expected_flat, key
    changed = module.parse_args(argv + ["--temperature", "0.3", "--samples", "4", "--video-decoder", "decord"])
    assert changed.cfg.rollout.temperature == 0.3 and changed.cfg.eval.samples == 4
    assert changed.cfg.eval.readout == "mean" and changed.cfg.video.decoder == "decord"
    expected_readout = module.parse_args(argv + ["--readout", "expected"])
    assert expected_readout.cfg.eval.readout == "expected" and expected_readout.cfg.eval.samples == 1


def test_a_scoring_option_out_of_range_is_named(capsys):
    from launch import score

    with pytest.raises(SystemExit):
        score.parse_args(["--model", "m", "x.png", "--output", "s.csv", "--samples", "0"])
    assert "--samples" in capsys.readouterr().err


def test_each_choice_list_is_the_owning_modules():
    """The config checks allowed values against the tuples the owning modules use themselves."""
    from actors import grpo_objective, learner, placement, reward, rollout
    from qadata import video
    from rollouts import vllm_backend

    assert CHOICES["algorithm.kl_estimator"] is grpo_objective.KL_ESTIMATORS
    assert CHOICES["learner.comm_backend"] is learner.COMM_BACKENDS
    assert CHOICES["placement.mode"] is placement.PLACEMENT_MODES
    assert CHOICES["reward.preference_scope"] is reward.PREFERENCE_SCOPES
    assert CHOICES["rollout.backend"] is rollout.ROLLOUT_BACKENDS
    assert CHOICES["rollout.vllm.weight_sync"] is vllm_backend.WEIGHT_SYNCS
    assert CHOICES["video.decoder"] == tuple(video.DECODERS)
    literal_tuples = [line for line in Path(schema.__file__).read_text().splitlines()
                      if line.strip().startswith('"') and ': ("' in line]
    assert literal_tuples == [], "allowed values spelled out in the config module"
