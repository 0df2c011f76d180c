"""preresq against TRL's GRPOTrainer on the same work, one run: seconds per step and their ratio.

    make vs-trl                                   # both model sizes (about 10 min on 2 cores)
    .venv-bench/bin/python benchmarks/vs_trl.py --models tiny --steps 12

Both systems get the same model folder, the same 64 images and the project's IQA question, G = 6 answers to
8 prompts a step, at most 64 new tokens at temperature 0.6, fp32, the KL term at beta 0.04 (so both run a
reference forward), 2 torch threads, no gradient checkpointing. preresq runs `launch/grpo.py` (Ray actors,
DeepSpeed ZeRO-2, its transformers rollout backend) twice: in turn (2 threads a role) and one step off
(trainer.max_staleness 1, a thread a role); TRL 1.16 generates with transformers' `generate`.
Step time is the median from step 3 on; each system runs in its own process. Models: `tiny` is the warmed-up
model of `make prepare` (0.74M parameters, 112 px, 16 picture tokens a picture); `5.9m` is an untrained one
built here (hidden 256, 4 layers, vision 256, 224 px, 64 picture tokens). Results: --out (results.md, .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from training_runs import step_medians, train  # beside this script

ROOT = Path(__file__).resolve().parent.parent

IMAGES, PROMPTS, G, NEW_TOKENS, TEMPERATURE, BETA, LR, THREADS = 64, 8, 6, 64, 0.6, 0.04, 5e-4, 2
GENERATED = ROOT / "artifacts" / "data" / "generated" / "manifest.parquet"
MODELS = {"tiny": None, "5.9m": dict(hidden=256, layers=4, heads=4, vision_hidden=256, vision_depth=2, image_side=224)}


def parameters(folder: Path) -> int:
    from models.loading import load_policy

    return sum(p.numel() for p in load_policy(folder, "float32", "cpu").parameters())


def model_folder(name: str, work: Path) -> Path:
    if MODELS[name] is None:
        folder = ROOT / "artifacts" / "models" / "qwen2.5-vl-tiny"
        if not (folder / "config.json").is_file():
            raise SystemExit(f"{folder} is missing: run `make prepare` first")
        return folder
    from models import tiny_model

    folder = work / f"model-{name}"
    if not (folder / "config.json").is_file():
        tiny_model.build(folder, tiny_model.TinyModelSpec(**MODELS[name]))
    return folder


def image_manifest(work: Path) -> Path:
    """The first 64 training images of the generated set, as a manifest both systems read."""
    from qadata.manifest import read_manifest, write_manifest

    if not GENERATED.is_file():
        raise SystemExit(f"{GENERATED} is missing: run `make prepare` first")
    frame = read_manifest(GENERATED)
    return write_manifest(frame[frame["split"] == "train"].head(IMAGES), work / "images.parquet")


# ----------------------------------------------------------------------------- preresq


# One step off (trainer.max_staleness 1) at a thread a role: preresq's fastest setting on 2 cores
# (benchmarks/async_overlap.py); its generate overlaps learning, so the column shows the batch-ahead time.
ONE_STEP_OFF = ["trainer.max_staleness=1", "algorithm.rollout_is=truncated", "rollout.threads=1", "learner.threads=1"]


def run_preresq(model: Path, manifest: Path, steps: int, out: Path, extra: tuple[str, ...] = ()) -> dict:
    overrides = [
        f"model.path={model}", f"data.train_manifest={manifest}", f"data.eval_manifest={GENERATED}",
        "data.eval_limit=8",
        f"trainer.steps={steps}", f"trainer.batch_size={PROMPTS}", f"rollout.group_size={G}",
        f"rollout.max_new_tokens={NEW_TOKENS}", f"rollout.temperature={TEMPERATURE}", f"algorithm.kl_coef={BETA}",
        f"learner.lr={LR}", f"rollout.threads={THREADS}", f"learner.threads={THREADS}", "learner.micro_batch=48",
        f"eval.max_new_tokens={NEW_TOKENS}", f"trainer.eval_every={steps}", f"trainer.checkpoint_every={steps}",
        # an untrained model has no answer format: the guard would (rightly) roll it back; not what is timed here
        "health.enabled=false", "trainer.verify_sync=false", *extra,
    ]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run = train(overrides, out / "run", out / "train.log")
    wall = time.perf_counter() - started
    generate = "time/generate_ahead" if extra else "time/generate"
    medians = step_medians(run, ("time/step", generate, "time/learn", "learner/tokens"), from_step=3)
    return {"step": medians["time/step"], "generate": medians[generate], "learn": medians["time/learn"],
            "tokens": medians["learner/tokens"], "process": wall}


# ----------------------------------------------------------------------------- TRL


def trl_worker(model: Path, manifest: Path, steps: int, out: Path) -> None:
    """TRL's GRPOTrainer on the same work, in this process; writes out/trl.json."""
    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from qadata.manifest import items, read_manifest
    from qadata.media import load_image
    from rewards.answer_format import question_for, read_scores, well_formed

    data = items(read_manifest(manifest), "train")
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": question_for("iqa")}],
                                  "image": load_image(i.path), "mos": i.mos} for i in data])

    def reward(completions, mos, **_):
        """The format reward plus 1 - |score - MOS| / 4 (the reward is not what is compared)."""
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        out = []
        for text, m in zip(texts, mos):
            scores = read_scores(text, "iqa")
            accuracy = 1 - abs(float(scores.mean()) - m) / 4 if scores is not None else 0
            out.append(float(well_formed(text, "iqa")) + accuracy)
        return out

    config = GRPOConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=PROMPTS * G, gradient_accumulation_steps=1,
        num_generations=G, max_completion_length=NEW_TOKENS, temperature=TEMPERATURE, top_p=1.0, beta=BETA,
        epsilon=0.2, loss_type="grpo", learning_rate=LR, max_steps=steps, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, seed=0,
        dataloader_num_workers=0, model_init_kwargs={"dtype": "float32"}, log_completions=False,
    )
    trainer = GRPOTrainer(model=str(model), reward_funcs=[reward], args=config, train_dataset=dataset)
    phases: dict[str, list[float]] = {"generate": [], "score": [], "step": []}

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            phases[name].append(time.perf_counter() - start)
            return result
        return wrapper

    trainer._generate = timed("generate", trainer._generate)
    trainer._generate_and_score_completions = timed("score", trainer._generate_and_score_completions)
    lengths: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            phases["step"].append(time.perf_counter() - self.start)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer.add_callback(StepClock())
    trainer.train()
    skip = slice(2, None)  # from step 3 on
    step, generate = statistics.median(phases["step"][skip]), statistics.median(phases["generate"][skip])
    score = statistics.median(phases["score"][skip])
    result = {"step": step, "generate": generate, "reference": score - generate, "learn": step - score,
              "tokens": statistics.median(lengths[skip]) * PROMPTS * G, "process": time.perf_counter() - started}
    (out / "trl.json").write_text(json.dumps(result, indent=2))


def run_trl(model: Path, manifest: Path, steps: int, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (out / "trl.log").open("w") as log:
        worker = [sys.executable, __file__, "--trl-worker", str(model), str(manifest), str(steps), str(out)]
        code = subprocess.run(worker, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if code.returncode != 0:
        raise SystemExit(f"TRL failed (exit {code.returncode}); see {out / 'trl.log'}")
    return {**json.loads((out / "trl.json").read_text()), "process": time.perf_counter() - started}


# ----------------------------------------------------------------------------- report


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def report(results: dict, steps: int) -> str:
    lines = [f"# preresq against TRL GRPOTrainer ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {machine()}. {IMAGES} images, {PROMPTS} prompts x G {G} a step, <= {NEW_TOKENS} new tokens at "
             f"T {TEMPERATURE}, beta {BETA}, fp32, {THREADS} threads (one step off: 1 a role), {steps} steps; median "
             "seconds per step from "
             "step 3 on; process: the whole command, start-up included.", "",
             "| model | params | system | step | generate | reference + scoring | learn | tokens a step | process | "
             "ratio (preresq / TRL) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        trl = r["trl"]
        for key, label, params in (("preresq", "preresq", f"{r['params'] / 1e6:.2f}M"),
                                   ("preresq_one_step_off", "preresq, one step off (generate overlapped)", "")):
            if key not in r:
                continue
            ours = r[key]
            lines.append(f"| {name if params else ''} | {params} | {label} | {ours['step']:.3f} | "
                         f"{ours['generate']:.3f} | (in learn) | {ours['learn']:.3f} | {ours['tokens']:.0f} | "
                         f"{ours['process']:.0f} s | **{ours['step'] / trl['step']:.2f}** |")
        lines.append(f"| {name} | | TRL 1.16 | {trl['step']:.3f} | {trl['generate']:.3f} | {trl['reference']:.3f} | "
                     f"{trl['learn']:.3f} | {trl['tokens']:.0f} | {trl['process']:.0f} s | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "vs_trl"))
    p.add_argument("--trl-worker", nargs=4, metavar=("MODEL", "MANIFEST", "STEPS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.trl_worker:
        model, manifest, steps, out = args.trl_worker
        return trl_worker(Path(model), Path(manifest), int(steps), Path(out))
    if args.steps < 4:
        p.error("--steps must be at least 4 (the median is taken from step 3 on)")
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    manifest = image_manifest(work)
    results = {}
    for name in args.models:
        model = model_folder(name, work)
        print(f"{name}: preresq ...", flush=True)
        ours = run_preresq(model, manifest, args.steps, work / name / "preresq")
        print(f"{name}: preresq {ours['step']:.3f} s a step; one step off ...", flush=True)
        off = run_preresq(model, manifest, args.steps, work / name / "preresq-one-step-off", tuple(ONE_STEP_OFF))
        print(f"{name}: preresq one step off {off['step']:.3f} s a step; TRL ...", flush=True)
        trl = run_trl(model, manifest, args.steps, work / name / "trl")
        print(f"{name}: TRL {trl['step']:.3f} s a step; ratios {ours['step'] / trl['step']:.2f}, one step off "
              f"{off['step'] / trl['step']:.2f}", flush=True)
        results[name] = {"params": parameters(model), "preresq": ours, "preresq_one_step_off": off, "trl": trl}
    text = report(results, args.steps)
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(text)


if __name__ == "__main__":
    main()
