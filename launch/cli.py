"""`preresq COMMAND ...`: the project's commands, installed with the package (`pip install -e .`, `make env`).

    preresq train --config configs/local.yaml trainer.steps=20     # launch/grpo.py: the GRPO controller
    preresq evaluate --model artifacts/run/policy ...             # launch/evaluate.py: SRCC / PLCC on benchmarks
    preresq score --model artifacts/run/policy photo.jpg clip.mp4 # launch/score.py: your own media
    preresq prepare                                                # launch/prepare.py: the tiny model and data
    preresq cluster --workers 3 --gpus 1                           # launch/local_cluster.py: a rehearsal cluster

`preresq COMMAND --help` gives each command's options; `python launch/NAME.py ...` runs the same code.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # command: (module, its entry function, what it does)
    "train": ("launch.grpo", "cli", "train a quality model with GRPO (the controller)"),
    "evaluate": ("launch.evaluate", "main", "SRCC / PLCC of a model on quality benchmarks"),
    "score": ("launch.score", "main", "score your own pictures and videos, with the reasoning"),
    "prepare": ("launch.prepare", "main", "build the tiny model and the generated data set (make prepare)"),
    "cluster": ("launch.local_cluster", "main", "a multi-node Ray cluster on this machine, for rehearsals"),
}


def usage() -> str:
    return "usage: preresq COMMAND [options]\n\ncommands:\n" + "".join(
        f"  {name:9s} {what}\n" for name, (_, _, what) in COMMANDS.items()) + "\n" + __doc__.split("\n\n")[-1]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"preresq: unknown command {command!r}; the commands are {', '.join(COMMANDS)} "
                         "(preresq --help)")
    module, function, _ = COMMANDS[command]
    sys.argv = [f"preresq {command}", *rest]  # argparse names the command in usage and errors
    getattr(importlib.import_module(module), function)(rest)


if __name__ == "__main__":
    main()
