"""The README and docs/ stay true to the code: every config option, command, command-line option, make target,
file and link they name exists."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

from helpers import ROOT
from launch.cli import COMMANDS

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = ("run", "model", "data", "video", "rollout", "reward", "algorithm", "learner", "trainer", "health", "eval",
            "tracking", "ray", "placement")
OPTION = re.compile(rf"(?<![\w./-])((?:{'|'.join(SECTIONS)})\.[a-z_]+(?:\.[a-z_0-9]+)*)(?=[\s=`'\",;:)]|$)")
COMMAND = re.compile(r"(?:python |\.venv/bin/python )((?:launch|benchmarks)/[a-z_/]+\.py)|preresq ([a-z]+)")
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FILE = re.compile(r"`((?:actors|models|rewards|rollouts|launch|qadata|evaluation|configs|benchmarks|tests|docs)"
                  r"/[\w./-]*\.(?:py|yaml|md|png|json|csv))`")


def pages() -> list[tuple[Path, str]]:
    return [(page, page.read_text()) for page in PAGES]


def code_of(text: str) -> str:
    """Fenced blocks and inline code, continuation lines joined: where options and commands are written."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(fenced + inline).replace("\\\n", " ")


@cache
def config_keys() -> set[str]:
    from launch.trainer.config import flatten, load_config

    keys = set(flatten(load_config(None, [])))
    return keys | {".".join(key.split(".")[:n]) for key in keys for n in range(1, key.count(".") + 1)}


def test_every_config_option_named_exists():
    files = ("csv", "mat", "json", "yaml", "parquet", "txt", "py", "png", "md", "db", "jsonl", "html", "mp4")
    unknown = sorted({f"{page.name}: {name}" for page, text in pages() for name in OPTION.findall(code_of(text))
                      if name not in config_keys() and name.rsplit(".", 1)[1] not in files})
    assert not unknown


def help_text(script: str) -> str:
    command = ([sys.executable, "-m", "launch.cli", script[len("preresq "):], "--help"] if script.startswith("preresq ")
               else [sys.executable, script, "--help"])
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr[-1500:]}"
    return result.stdout


def test_every_command_and_its_options_exist():
    used: dict[str, set[str]] = {}
    for page, text in pages():
        for line in code_of(text).splitlines():
            for match in COMMAND.finditer(line):
                script, verb = match.groups()
                if verb:
                    assert verb in COMMANDS, f"{page.name}: preresq {verb}"
                    script = f"preresq {verb}"
                else:
                    assert (ROOT / script).is_file(), f"{page.name}: {script}"
                # The options up to the next command on the line belong to this one.
                rest = COMMAND.split(line[match.end():], maxsplit=1)[0]
                used.setdefault(script, set()).update(FLAG.findall(rest))
    assert "launch/evaluate.py" in used and "preresq score" in used
    with ThreadPoolExecutor(4) as pool:
        helps = dict(zip(used, pool.map(help_text, used)))
    missing = sorted(f"{script} --{flag}" for script, flags in used.items() for flag in flags
                     if f"--{flag}" not in helps[script])
    assert not missing


def test_every_make_target_file_and_link_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    problems = []
    for page, text in pages():
        problems += [f"{page.name}: make {t}" for t in re.findall(r"\bmake ([a-z][\w-]*)", code_of(text))
                     if t not in targets]
        problems += [f"{page.name}: {f}" for f in FILE.findall(text) if not (ROOT / f).exists()]
        for link in LINK.findall(text):
            if not re.match(r"[a-z]+://", link) and not link.startswith("#"):
                target = (page.parent / link.split("#")[0]).resolve()
                if not target.exists():
                    problems.append(f"{page.name}: link {link}")
    assert not problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_names_no_machine_path(page):
    assert not re.search(r"(?<![\w.])/(work|root|home|tmp/pytest-of)[-\w]*/", page.read_text())
