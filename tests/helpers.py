"""Running project commands from tests as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from launch.local_cluster import token_environment

ROOT = Path(__file__).resolve().parent.parent
# Third-party warnings and notices none of preresq's commands may print (issue 24: a quiet console).
NOISE = ("Warning:", "warnings.warn", "Setting accelerator to CPU", "Loading weights", "Writing model shards",
         "deduplicates logs", "Started a local Ray instance", "not writable", "Downloading artifacts")


def noise_in(console: str) -> list[str]:
    """The lines of `console` with a NOISE mark."""
    return [line for line in console.splitlines() if any(mark in line for mark in NOISE)]


def run_cli(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS` from the repository root, as a user runs it (a local Ray gets a token of its own)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def run_in_terminal(args: list[str], timeout: float = 600) -> tuple[int, str]:
    """`python ARGS` from the repository root with a pseudo-terminal as its stdout and stderr, as in a user's shell:
    (exit code, everything it wrote)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns: a real window's
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=child,
                               stderr=child, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(child)
    chunks, deadline, quiet_since = [], time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        data = b""
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            chunks.append(data)
        if process.poll() is not None:  # a process it left behind may keep the terminal open: stop once quiet
            quiet_since = quiet_since if not data and quiet_since else time.monotonic()
            if time.monotonic() - quiet_since > 2:
                break
    else:
        process.kill()
        raise TimeoutError(f"{args} ran past {timeout} s")
    os.close(main)
    return process.wait(), b"".join(chunks).decode(errors="replace")


class Run:
    """`program args` (`python launch/grpo.py ...`, `ray job submit ...`) in the background from the repository
    root, its output read line by line."""

    def __init__(self, args: list[str], env: dict | None = None, program: str = sys.executable):
        self.process = subprocess.Popen([program, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env={**(env or os.environ), "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never came:\n{self.output[-4000:]}")
            time.sleep(0.05)

    def actor_process(self, role: str):
        """The process of the first `role` actor (e.g. "LearnerRank") under this command."""
        import psutil

        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if f"ray::{role}" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        raise AssertionError(f"no {role} process under the driver")

    def finish(self, timeout: float = 400) -> int:
        """The exit code; a command still running after `timeout` s is killed and its output's end shown."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            raise AssertionError(f"still running {timeout:g} s later:\n{self.output[-4000:]}") from None
        self.reader.join(timeout=10)
        return code


class RayHead:
    """A real Ray head (`ray start --head --block`) in a process session of its own, with token authentication.

    Stopped through its own handles: its process group and every descendant of `ray start`, never `ray stop`
    (which ends every Ray process on the machine, other clusters and CI's own included)."""

    def __init__(self, port: int, dashboard_port: int, num_cpus: int):

        bin_dir = Path(sys.executable).parent
        self.env = token_environment()
        # Short: Ray's socket paths under the temp dir must stay below the kernel's 107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        self.process = subprocess.Popen(
            [str(bin_dir / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}", f"--port={port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--temp-dir={self.temp_dir}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(120)

    def _wait_ready(self, timeout_s: float) -> None:
        """Until the dashboard answers (`ray start --block` does not return when the head is up)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2).close()
                return
            except urllib.error.HTTPError:  # it answers (refusing a request without the token)
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the Ray head did not come up within {timeout_s:g} s") from None
                time.sleep(0.5)

    def stop(self) -> None:
        import shutil

        import psutil

        try:
            family = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for sig, wait_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 15)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            for member in family:  # a job's driver runs in a session of its own
                try:
                    member.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, family = psutil.wait_procs(family, timeout=wait_s)
            if not family:
                break
        self.process.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# The defaults of configs/base.yaml as the objects that code under test takes, so that no test restates them.

def base_config(*overrides: str, config_file: str | None = None):
    from launch.trainer.config import load_config

    return load_config(config_file, list(overrides))


def loss_options(**changes) -> dict:
    """grpo_loss's keyword options from base.yaml's `algorithm:` section, with `changes`."""
    a = base_config().algorithm
    return {"clip_low": a.clip_low, "clip_high": a.clip_high, "kl_coef": a.kl_coef, "kl_estimator": a.kl_estimator,
            "aggregation": a.loss_aggregation, **changes}


def sampling(**changes):
    """SamplingSettings of a training step under base.yaml (seed 0), with `changes`."""
    from dataclasses import replace

    from rollouts.backend import SamplingSettings

    return replace(SamplingSettings.training(base_config().rollout, 0), **changes)


def video_settings(**changes):
    from qadata.video import VideoSettings

    return VideoSettings(**{**base_config().video, **changes})


def reward_section(**changes):
    """base.yaml's `reward:` section (typed), with `changes`."""
    from dataclasses import replace

    from launch.trainer.config import typed

    return replace(typed(base_config().reward), **changes)


def local_config(model_path, *overrides: str):
    """configs/local.yaml (float32, CPU, ZeRO-2 over gloo, one rank) on `model_path`, one thread per role."""
    return base_config(f"model.path={model_path}", "rollout.threads=1", "learner.threads=1", *overrides,
                       config_file=str(ROOT / "configs" / "local.yaml"))


def rollout_worker(model_path, *overrides: str):
    """A RolloutWorker in this process, as the actors are built from a run's config."""
    from actors.rollout import RolloutWorker
    from launch.trainer.config import typed

    cfg = local_config(model_path, *overrides)
    return RolloutWorker(typed(cfg.model), typed(cfg.rollout), cfg.run.seed)
