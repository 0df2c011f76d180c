"""The GPU smoke script (benchmarks/hf_backend_device.py) on the CPU with the tiny shape, so it cannot rot before
a GPU is at hand: every row of its table, and the sampling and learner log-probs agreeing in float32."""

from __future__ import annotations

import re

from helpers import run_cli


def test_the_gpu_smoke_script_runs_on_cpu_and_prints_its_table():
    result = run_cli(["benchmarks/hf_backend_device.py", "--shape", "tiny", "--device", "cpu", "--dtype", "float32",
                      "--images", "2", "--group", "3", "--new-tokens", "8", "--steps", "1"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = dict(re.findall(r"^\| ([^|]+) \| (.+) \|$", result.stdout, flags=re.M))
    assert rows["batch"].startswith("6 answers (48 answer tokens")  # a random model never ends early
    assert re.search(r"[\d.]+ s, \d+ answer tokens/s", rows["rollout"])
    assert re.search(r"[\d.]+ s, \d+ answer tokens/s, peak [\d.]+ GiB \(AdamW in float32\)", rows["learner update"])
    assert float(rows["largest log-prob gap, sampling vs learner"]) < 1e-4
