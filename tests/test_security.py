"""Nobody let in: the local Ray of a run refuses a driver without the run's token; no secret reaches MLflow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from test_faults import Run, args_for

from launch.trainer.tracking import mask_credentials, public_params


def test_credentials_and_secret_keys_never_become_mlflow_params():
    params = public_params({
        "tracking.uri": "https://alice:s3cret@mlflow.example:5000",
        "tracking.experiment": "preresq",
        "storage.api_key": "abc123",
        "run.auth_token": "xyz",
        "data.train_manifest": "s3://AKIAKEY:SECRETKEY@bucket/manifest.parquet",
        "model.path": "/models/qwen",
    })
    assert params == {"tracking.uri": "https://alice:***@mlflow.example:5000", "tracking.experiment": "preresq",
                      "data.train_manifest": "s3://AKIAKEY:***@bucket/manifest.parquet", "model.path": "/models/qwen"}
    assert mask_credentials("http://ghp_TOKEN@host/x and http://host/y") == "http://***@host/x and http://host/y"


@pytest.mark.slow
def test_a_local_run_refuses_a_driver_without_its_token(tiny_model, generated_data, tmp_path):
    run = Run(args_for(tiny_model, generated_data, tmp_path / "run", **{"trainer.steps": 400}))
    try:
        run.wait_for("step 1/400")
        line = next(line for line in run.lines if line.startswith("local Ray at "))
        assert "token authentication on" in line
        address = line.split()[3].rstrip(",")
        intruder = f"import ray; ray.init(address={address!r}); print('CONNECTED')"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        # The three intruders at once: each waits out Ray's retries before it gives up.
        attempts = {name: subprocess.Popen([sys.executable, "-c", intruder], env={**env, **extra}, text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for name, extra in (("no token", {}), ("auth disabled", {"RAY_AUTH_MODE": "disabled"}),
                                        ("a wrong token", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}))}
        for name, attempt in attempts.items():
            stdout, stderr = attempt.communicate(timeout=120)
            assert attempt.returncode != 0 and "CONNECTED" not in stdout, name
            assert "Authentication" in stderr or "auth" in stderr.lower(), (name, stderr[-2000:])
        # The run's own token is what lets a driver in (read from an actor's environment: the actors inherit it).
        token = run.actor_process("RolloutWorker").environ()["RAY_AUTH_TOKEN"]
        result = subprocess.run([sys.executable, "-c", intruder], capture_output=True, text=True, timeout=180,
                                env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
        assert "CONNECTED" in result.stdout, result.stderr[-2000:]
    finally:
        run.process.send_signal(signal.SIGINT)  # Ctrl-C: stops at the next safe point, checkpointed
        code = run.finish(timeout=120)
    assert code == 130 and "stopped by SIGINT after step" in run.output, run.output[-4000:]


PLANTED = [".env", ".env.production", "basic_auth.ini", "auth.db", "mlflow.db", "deploy/server.pem", "id_rsa",
           "keys/signing.key", "artifacts/models/tiny/model.safetensors", "mlruns/0/meta.yaml", ".venv/bin/python",
           "launch/__pycache__/grpo.cpython-311.pyc"]


def test_the_job_upload_carries_code_and_no_planted_secret(tmp_path):
    """`ray job submit --working-dir .` zips the folder with Ray's own packaging, honouring .gitignore and
    .rayignore: a copy of the tree with secrets and data planted in it uploads the code and none of them."""
    import shutil
    import subprocess
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    from helpers import ROOT

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    copy = tmp_path / "checkout"
    for name in [*tracked, ".rayignore", ".gitignore"]:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    for name in PLANTED:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text("secret")
    upload = tmp_path / "upload.zip"
    create_package(str(copy), upload, include_gitignore=True)
    names = set(zipfile.ZipFile(upload).namelist())
    assert {"launch/grpo.py", "configs/base.yaml", "actors/learner.py"} <= names
    assert [n for n in PLANTED if n in names] == []
