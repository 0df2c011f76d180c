"""Checkpoints: atomic commits, pruning that keeps what was just written, a failed write that loses nothing,
and loading only what was committed (launch/trainer/checkpoint.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT
from launch.trainer.checkpoint import CheckpointError, CheckpointStore, read_state


def learner_writer(payload: bytes = b"weights"):
    def write(folder: str) -> None:  # what the learner group writes: DeepSpeed's folder with a tag inside
        (Path(folder) / "state").mkdir(parents=True)
        (Path(folder) / "state" / "model.pt").write_bytes(payload)
    return write


def test_commit_points_latest_at_a_verified_folder_and_prunes_older_ones(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    for step in (10, 20, 30):
        store.save(step, learner_writer(), {"step": step})
    assert store.steps() == [20, 30]
    assert store.latest() == tmp_path / "checkpoints" / "step-000030"
    assert read_state(store.latest()) == {"step": 30}
    manifest = json.loads((store.latest() / "manifest.json").read_text())["files"]
    assert set(manifest) == {"deepspeed/state/model.pt", "trainer_state.json"}
    assert not list(store.root.glob(".tmp-*"))


def test_saving_a_step_again_never_leaves_a_window_and_stale_later_steps_go(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=3)
    for step in (10, 20, 30):
        store.save(step, learner_writer(), {"step": step})
    # A rollback or a resume writes step 20 again: the old 30 is of an abandoned trajectory, and the new 20
    # gets a fresh name, so the committed 20 exists until the new one is in place.
    written = store.save(20, learner_writer(b"new"), {"step": 20, "again": True})
    assert written.name == "step-000020.1" and store.latest() == written
    assert [p.name for _, _, p in store.entries()] == ["step-000010", "step-000020.1"]
    assert read_state(store.latest())["again"] is True


def test_a_failed_write_keeps_the_previous_checkpoint_loadable(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    store.save(10, learner_writer(), {"step": 10})
    # A real write error from the kernel: a file-size limit makes the big write fail with EFBIG, as a
    # full disk fails with ENOSPC (CPython ignores SIGXFSZ, so the write raises).
    script = f"""
import resource, sys
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
from launch.trainer.checkpoint import CheckpointError, CheckpointStore
from test_checkpoint import learner_writer
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
try:
    CheckpointStore({str(store.root)!r}, keep=2).save(20, learner_writer(b"x" * (4 << 20)), {{"step": 20}})
except CheckpointError as error:
    print(error)
    sys.exit(3)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "could not write the checkpoint of step 20" in result.stdout and "step-000010 is intact" in result.stdout
    assert store.latest() == store.root / "step-000010" and store.steps() == [10]
    assert not list(store.root.glob(".tmp-*"))


@pytest.mark.parametrize("tamper", ["planted", "changed", "removed", "symlink", "outside", "dotdot", "absolute",
                                    "pointer_symlink", "no_manifest"])
def test_resume_reads_only_what_was_committed_inside_the_store(tmp_path, tamper):
    store = CheckpointStore(tmp_path / "run" / "checkpoints", keep=2)
    folder = store.save(10, learner_writer(), {"step": 10})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "evil.pt").write_bytes(b"pickle")
    pointer = store.root / "latest"
    if tamper == "planted":
        (folder / "deepspeed" / "state" / "extra.pt").write_bytes(b"pickle")
    elif tamper == "changed":
        (folder / "deepspeed" / "state" / "model.pt").write_bytes(b"weightz")
    elif tamper == "removed":
        (folder / "deepspeed" / "state" / "model.pt").unlink()
    elif tamper == "symlink":
        os.symlink(elsewhere / "evil.pt", folder / "deepspeed" / "state" / "link.pt")
    elif tamper == "outside":
        os.symlink(elsewhere, store.root / "step-000099")
        pointer.write_text("step-000099")
    elif tamper == "dotdot":
        pointer.write_text("../../elsewhere")
    elif tamper == "absolute":
        pointer.write_text(str(elsewhere))
    elif tamper == "pointer_symlink":
        pointer.unlink()
        (elsewhere / "latest").write_text("step-000010")
        os.symlink(elsewhere / "latest", pointer)
    elif tamper == "no_manifest":
        (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError) as refused:
        store.latest()
    named = {"planted": "extra.pt", "changed": "model.pt", "removed": "model.pt", "symlink": "link.pt",
             "outside": "step-000099", "dotdot": "../../elsewhere", "absolute": str(elsewhere),
             "pointer_symlink": "latest", "no_manifest": "manifest.json"}[tamper]
    assert named in str(refused.value)


def test_a_checkpoint_whose_learner_files_the_controller_cannot_see_is_refused_by_name(tmp_path):
    """On a cluster whose nodes do not share run.output_dir, the ranks' files land elsewhere: the commit names it."""
    from actors.checkpoint_files import written_by
    from launch.trainer.checkpoint import CheckpointError, CheckpointStore

    store = CheckpointStore(tmp_path / "checkpoints", keep=2)

    def learner(lost: bool):
        def write(folder):
            shards = Path(folder) / "state"
            shards.mkdir(parents=True)
            for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                         "zero_pp_rank_1_mp_rank_00_optim_states.pt"):
                (shards / name).write_bytes(name.encode())
            reported = {**written_by(0, folder), **written_by(1, folder)}
            if lost:  # rank 1 wrote on a node of its own
                (shards / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
            return reported
        return write

    good = store.save(1, learner(lost=False), {"step": 1})
    with pytest.raises(CheckpointError, match=r"zero_pp_rank_1_mp_rank_00_optim_states\.pt.* run\.output_dir must be "
                                              r"a folder every node sees"):
        store.save(2, learner(lost=True), {"step": 2})
    assert store.latest() == good and store.steps() == [1]


def test_each_rank_hashes_only_the_files_it_wrote(tmp_path):
    from actors.checkpoint_files import file_sha256, written_by

    for name in ("latest", "zero_to_fp32.py", "state/mp_rank_00_model_states.pt",
                 "state/zero_pp_rank_0_mp_rank_00_optim_states.pt", "state/zero_pp_rank_1_mp_rank_00_optim_states.pt",
                 "state/zero_pp_rank_10_mp_rank_00_model_states.pt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert sorted(written_by(0, tmp_path)) == ["latest", "state/mp_rank_00_model_states.pt",
                                               "state/zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_to_fp32.py"]
    assert list(written_by(1, tmp_path)) == ["state/zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    entry = written_by(10, tmp_path)["state/zero_pp_rank_10_mp_rank_00_model_states.pt"]
    assert entry == {"sha256": file_sha256(tmp_path / "state/zero_pp_rank_10_mp_rank_00_model_states.pt"),
                     "bytes": len("state/zero_pp_rank_10_mp_rank_00_model_states.pt")}
