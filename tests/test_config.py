"""Configuration: every default validates; unknown keys, wrong types and bad values fail by name,
before any actor starts."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import ROOT, run_cli
from launch.trainer.config import ConfigError, flatten, load_config


def test_base_and_local_configs_validate():
    base = load_config()
    assert base.rollout.group_size == 6 and base.algorithm.kl_coef == 0.04 and base.learner.lr == 1e-6
    local = load_config(ROOT / "configs" / "local.yaml", ["trainer.steps=20"])
    assert local.trainer.steps == 20 and local.learner.comm_backend == "gloo"
    assert flatten(local)["trainer.steps"] == 20


def test_every_schema_key_has_a_default_in_base_yaml():
    raw = OmegaConf.load(ROOT / "configs" / "base.yaml")
    assert set(flatten(load_config())) == set(flatten(raw))


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.stepz=3", "trainer.stepz"),
        ("trainer.steps=many", "trainer.steps"),
        ("algorithm.kl_estimator=k4", "algorithm.kl_estimator"),
        ("learner.zero_stage=4", "learner.zero_stage"),
        ("rollout.group_size=0", "rollout.group_size"),
        ("video.decoder=ffmpeg", "video.decoder"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(overrides=[override])


def test_bad_yaml_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*learner\.lr"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_fails_before_any_actor_on_bad_input(tmp_path):
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", "trainer.batch_sise=4"])
    assert result.returncode != 0 and "trainer.batch_sise" in result.stderr
    assert "Started a local Ray" not in result.stdout + result.stderr

    missing_model = tmp_path / "no-model"
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", f"model.path={missing_model}"])
    assert result.returncode != 0 and f"model folder not found: {missing_model}" in result.stderr

    empty = tmp_path / "model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    missing_manifest = Path(tmp_path / "nowhere.parquet")
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", f"model.path={empty}",
                      f"data.train_manifest={missing_manifest}"])
    assert result.returncode != 0 and f"manifest not found: {missing_manifest}" in result.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.backend=vllm", "rollout.device=cuda"], "trainer.verify_sync"),
        (["rollout.backend=vllm", "trainer.verify_sync=false", "rollout.vllm.weight_sync=nccl"], "GPUs on both sides"),
        (["rollout.backend=vllm", "trainer.verify_sync=false", "rollout.device=cuda", "learner.device=cuda",
          "learner.comm_backend=nccl", "rollout.vllm.weight_sync=ipc"], "colocated"),
        (["rollout.backend=vllm", "trainer.verify_sync=false", "rollout.vllm.sleep=true"], "colocated"),
        (["rollout.vllm.weight_sync=rdma"], "rollout.vllm.weight_sync"),
        (["rollout.backend=vllm"], "rollout.vllm.kv_cache_bytes.*in bytes"),
        (["rollout.backend=vllm", "trainer.verify_sync=false", "rollout.vllm.kv_cache_bytes=4096"], "at least 1 MiB"),
        (["algorithm.rollout_is=full"], "algorithm.rollout_is"),
        (["algorithm.rollout_is_cap=0.5"], "algorithm.rollout_is_cap"),
    ],
)
def test_vllm_and_importance_sampling_options_are_checked_at_start(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "local.yaml", overrides)
    # the GPU layouts themselves load: vLLM rollouts, NCCL weight transfer
    assert load_config(ROOT / "configs" / "gpu-8.yaml").rollout.vllm.weight_sync == "nccl"


@pytest.mark.parametrize("overrides, message", [
    (["trainer.max_staleness=1", "algorithm.rollout_is=truncated"], None),
    (["trainer.max_staleness=2", "algorithm.rollout_is=truncated"], "max_staleness' is 2: 0 .* or 1"),
    (["trainer.max_staleness=1"], "'algorithm.rollout_is' is none"),
    (["trainer.max_staleness=1", "algorithm.rollout_is=truncated", "placement.mode=colocated"],
     "'placement.mode' is colocated: rollout and learner take turns"),
    (["trainer.max_staleness=1", "algorithm.rollout_is=truncated", "algorithm.dynamic_sampling.enabled=true"],
     "dynamic_sampling.enabled"),
])
def test_one_step_off_is_refused_where_nothing_could_overlap_or_nothing_corrects_it(overrides, message):
    if message is None:
        assert load_config(ROOT / "configs" / "local.yaml", overrides).trainer.max_staleness == 1
        return
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "local.yaml", overrides)


TWO = "trainer.stages=[{name: explore, steps: 100, overrides: %s}, {name: settle, steps: 100}]"


@pytest.mark.parametrize("stages, message", [
    (TWO % "{data: {question: pool}, rollout: {temperature: 0.9}}", None),
    ("trainer.stages=[{name: explore, steps: 10}]", "add up to 10 but trainer.steps is 200"),
    (TWO % "{learner: {lr: 1.0}}", r"trainer.stages\[0\] \(explore\).overrides.learner.lr' cannot change between"),
    (TWO % "{rollout: {group_size: 3}}", "rollout.group_size' cannot change"),
    (TWO % "{rollout: {temprature: 0.9}}", "rollout.temprature is not a config key"),
    (TWO % "{data: {question: some}}", r"trainer.stages\[0\] \(explore\): config key 'data.question' is 'some'"),
    (TWO % "{reward: {preference_chunk: 0}}", r"\(explore\): config key 'reward.preference_chunk' must be"),
])
def test_stages_are_checked_at_start_naming_the_stage_and_key(stages, message):
    if message is None:
        from launch.trainer.stages import run_stages, stage_at

        cfg = load_config(ROOT / "configs" / "local.yaml", [stages])
        resolved = run_stages(cfg)
        assert [(s.number, s.first_step, s.last_step) for s in resolved] == [(1, 1, 100), (2, 101, 200)]
        first, second = stage_at(resolved, 100).cfg, stage_at(resolved, 101).cfg
        assert (first.data.question, second.data.question) == ("pool", "single")
        assert (first.rollout.temperature, second.rollout.temperature) == (0.9, 0.6)
        assert "data.question=pool, rollout.temperature=0.9" in resolved[0].announce(2)
        return
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "local.yaml", [stages])
