"""The whole loop with vLLM rollout actors on CPU (`make test-vllm`): `launch/grpo.py` as a user runs it,
with Ray actors, a DeepSpeed ZeRO-3 learner group over gloo, MLflow on SQLite, images and clips through
vLLM; and `evaluate.py` / `score.py` with `--backend vllm`."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from helpers import run_cli
from qadata.benchmark_set import ci_benchmark
from qadata.manifest import read_manifest, write_manifest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` builds its environment")

ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # each engine inside its rollout actor's process
# The learner's recomputed log-probs against the engine's, per token (learner/logprob_gap, a mean over the
# step's answer tokens): measured 9e-6 at both steps here (fp32). One update at this lr moves them far more,
# so a sync that did not land would show at step 2.
LOGPROB_GAP = 2e-4


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """4 images and 2 clips to train on, the same mix held out: a manifest of real files."""
    folder = tmp_path_factory.mktemp("bench")
    bench = read_manifest(ci_benchmark(folder))
    pick = pd.concat([bench[(bench["kind"] == k) & (bench["split"] == "train")].head(n) for k, n in
                      (("image", 8), ("video", 4))])
    frame = pd.concat([pick.iloc[[0, 1, 2, 3, 8, 9]].assign(split="train"),
                       pick.iloc[[4, 5, 6, 7, 10, 11]].assign(split="test")], ignore_index=True)
    return write_manifest(frame[["path", "mos", "dataset", "split", "kind"]], folder / "mixed.parquet")


def settings(model, manifest, out, **extra) -> list[str]:
    values = {
        "model.path": model, "data.train_manifest": manifest, "run.output_dir": out,
        "rollout.backend": "vllm", "rollout.vllm.kv_cache_bytes": 1 << 30, "rollout.vllm.max_model_len": 1024,
        "rollout.vllm.enforce_eager": True, "rollout.max_new_tokens": 64, "eval.max_new_tokens": 64,
        "trainer.batch_size": 6, "rollout.group_size": 3, "learner.lr": 1e-4, "health.min_scored": 0,
        "tracking.uri": f"sqlite:///{out.parent / 'mlflow.db'}", **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def metric(uri: str, run_id: str, key: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, key)}


def test_two_steps_zero3_two_ranks_then_engine_answers_equal_the_learners(tiny_model_heads64, mixed, tmp_path):
    out = tmp_path / "run"
    args = settings(tiny_model_heads64, mixed, out, **{"trainer.steps": 2, "learner.num_ranks": 2,
                                                        "learner.zero_stage": 3, "learner.micro_batch": 3,
                                                        "trainer.verify_sync": True})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args], env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    check = summary["weight_digests"]  # vLLM: greedy answers against a transformers copy of the learner
    assert check["items"] == 6 and check["rollouts"] == [{"equal": 6, "differ": [], "skipped": []}]
    assert check["answer_tokens"] > 100
    shares = [r["reference_params_held"] / r["reference_params"] for r in summary["learner_ranks"]]
    assert len(shares) == 2 and all(0.4 < s < 0.6 for s in shares)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gaps = metric(uri, summary["mlflow_run_id"], "learner/logprob_gap")
    print(f"learner/logprob_gap per step: {gaps}")
    assert sorted(gaps) == [1, 2] and max(gaps.values()) < LOGPROB_GAP  # step 2 samples from the synced weights
    assert metric(uri, summary["mlflow_run_id"], "rollout/skipped_prompts") == {1: 0.0, 2: 0.0}
    assert summary["val_after"]["items"] == 6


def test_one_step_off_with_vllm_engines_learns_each_batch_one_version_late_and_ends_in_sync(tiny_model_heads64, mixed,
                                                                                            tmp_path):
    out = tmp_path / "run"
    args = settings(tiny_model_heads64, mixed, out, **{"trainer.steps": 3, "learner.num_ranks": 1,
                                                        "trainer.max_staleness": 1, "algorithm.rollout_is": "truncated",
                                                        "rollout.threads": 1, "learner.threads": 1,
                                                        "trainer.verify_sync": True})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args], env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weight_digests"]["rollouts"] == [{"equal": 6, "differ": [], "skipped": []}]
    uri, run_id = f"sqlite:///{tmp_path / 'mlflow.db'}", summary["mlflow_run_id"]
    assert metric(uri, run_id, "trainer/staleness") == {1: 0.0, 2: 1.0, 3: 1.0}
    gaps = metric(uri, run_id, "learner/logprob_gap")
    print(f"learner/logprob_gap per step, one step off: {gaps}")
    # Step 1's answers come from the weights it learns from; later ones from the weights one update back.
    assert gaps[1] < LOGPROB_GAP and min(gaps[2], gaps[3]) > LOGPROB_GAP
    assert all(w > 0 for w in metric(uri, run_id, "learner/is_weight").values())


def test_a_prompt_too_long_for_the_engine_is_skipped_counted_and_not_trained_on(tiny_model_heads64, mixed,
                                                                                 tmp_path):
    out = tmp_path / "run"
    # An image prompt is 139 text + 16 picture tokens, a clip's 194 + 64: 260 fits images + 64 answer tokens only.
    args = settings(tiny_model_heads64, mixed, out, **{"trainer.steps": 1, "rollout.vllm.max_model_len": 260,
                                                        "rollout.vllm.on_oversized": "skip", "learner.num_ranks": 1})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args], env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "skipping rollout:" in result.stdout and "max_model_len 260" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = summary["mlflow_run_id"]
    assert metric(uri, run_id, "rollout/skipped_prompts") == {1: 2.0}  # the 2 clips of the 6 items
    assert summary["weight_digests"]["rollouts"][0]["skipped"] == ["generated-video:10", "generated-video:11"]
    answered = 4 * 3
    tokens = metric(uri, run_id, "learner/tokens")[1]
    assert tokens == pytest.approx(metric(uri, run_id, "response_length")[1] * answered)


def test_evaluate_and_score_with_the_vllm_backend(tiny_model_heads64, mixed, tmp_path):
    common = ["--model", str(tiny_model_heads64), "--backend", "vllm", "--kv-cache-bytes", str(1 << 30),
              "--max-model-len", "1024", "--max-new-tokens", "64", "--threads", "1"]
    result = run_cli(["launch/evaluate.py", "--manifest", str(mixed), "--split", "test", "--baseline", "none",
                      "--no-tracking", "--output-dir", str(tmp_path / "eval"), *common], env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    results = {r["dataset"]: r for r in json.loads((tmp_path / "eval" / "summary.json").read_text())["results"]}
    assert results["generated-image"]["items"] == 4 and results["generated-video"]["items"] == 2
    assert results["generated-image"]["scored"] >= 3 and results["generated-video"]["scored"] >= 1
    frame = read_manifest(mixed)
    files = [frame[frame["kind"] == "image"]["path"].iloc[0], frame[frame["kind"] == "video"]["path"].iloc[0]]
    output = tmp_path / "scores.jsonl"
    result = run_cli(["launch/score.py", *files, "--output", str(output), *common], env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(os.path.basename(r["path"]) for r in rows) == sorted(os.path.basename(f) for f in files)
    assert all(r["error"] is None for r in rows) and any(r["score"] is not None for r in rows)
