"""The `preresq` command the package installs: each verb reaches its module, with its own usage line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launch.cli import COMMANDS

PRERESQ = Path(sys.executable).parent / "preresq"


def preresq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert PRERESQ.is_file(), f"{PRERESQ} is missing: the package was installed before [project.scripts]; make env"
    return subprocess.run([str(PRERESQ), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_preresq_lists_its_commands():
    result = preresq()
    assert result.returncode == 0
    assert all(f"  {name} " in result.stdout for name in COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_answers_help_with_its_own_usage(command):
    result = preresq(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: preresq {command}")


def test_an_unknown_command_is_named():
    result = preresq("trian")
    assert result.returncode != 0 and "unknown command 'trian'" in result.stderr and "train" in result.stderr


def test_a_relative_config_is_found_from_outside_the_clone(tmp_path):
    from launch.trainer.config import ConfigError, load_config

    result = preresq("train", "--config", "configs/local.yaml", "model.path=missing-model", cwd=tmp_path)
    assert result.returncode != 0 and "model folder not found: missing-model" in result.stderr  # config read
    with pytest.raises(ConfigError, match="config file not found: configs/none.yaml"):
        load_config("configs/none.yaml")


def test_preresq_prepare_prints_its_own_lines_only(tmp_path):
    from helpers import noise_in

    result = preresq("prepare", "--root", str(tmp_path), "--warmup-steps", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stdout + result.stderr
    assert not noise_in(console) and "warming up the tiny model" in console
    assert (tmp_path / "models" / "qwen2.5-vl-tiny" / "warmup.json").is_file()
