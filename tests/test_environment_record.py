"""The fingerprint of a model folder: equal for a copy, changed by a config edit or another weights size."""

from __future__ import annotations

import shutil

from launch.environment_record import git_state, model_fingerprint


def test_a_model_folder_fingerprint_follows_its_config_and_weights(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 64}')
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    first = model_fingerprint(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert model_fingerprint(copy)["sha256"] == first["sha256"] and first["files"] == 2 and first["bytes"] > 4096
    (copy / "config.json").write_text('{"hidden_size": 65}')
    assert model_fingerprint(copy)["sha256"] != first["sha256"]
    shutil.copytree(folder, tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").write_bytes(b"\0" * 4100)
    assert model_fingerprint(tmp_path / "other")["sha256"] != first["sha256"]


def test_the_git_state_names_this_checkout():
    state = git_state()  # the tests run from a git checkout
    assert len(state["revision"]) == 40 and state["dirty"] in (True, False)
