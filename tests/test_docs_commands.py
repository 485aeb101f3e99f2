"""Every shell command in README.md and docs/ is exercised, so the pages cannot drift from the code.

Commands come from ```bash blocks (lines ending with ``\\`` joined, comments dropped). Each one has a
known shape:

- ``ponder <stage> ...``, ``python -m ponder.training.<stage> ...`` and ``accelerate launch ... -m
  ponder.training.<stage> ...``: parsed into the stage's configuration by the stage's own ``main``,
  which is stopped right after parsing; ``--config`` files and accelerate configs must exist;
- ``ponder pipeline DIR ...``: every stage command the pipeline would launch is parsed the same way;
- ``ponder --help`` and ``ponder <stage> --help``: run;
- ``python benchmarks/<script>.py ...``: the script's arguments are parsed by its own ``main`` and
  ``--help`` works;
- the README's two set-up commands (install and run the pipeline; run the tests), exactly;
- the few commands in `OTHER_COMMANDS`, listed with the reason they are not run here.

Any other shape fails: document only commands that exist.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.training.cli import STAGES
from ponder.training.core import configs

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SETUP_COMMANDS = (
    'pip install torch==2.13.0 && pip install -e ".[train,dev]" && ponder pipeline recipes/toy',
    "python -m pytest",
)
OTHER_COMMANDS = {  # documented commands that are not run or parsed here, and why
    'pip install -e ".[train,vllm]"': "installs vLLM, for GPU machines",
}
STAGE_MODULES = {module for module, _ in STAGES.values()}
REAL_PARSE_ARGS = argparse.ArgumentParser.parse_args
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def shell_commands(page: Path) -> list[tuple[int, str]]:
    """(line number, command) for every command of the page's ```bash blocks."""
    commands, fence, pending, start = [], None, "", 0
    for number, line in enumerate(page.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            assert not pending, f"{page.name}:{start}: a command ends with '\\' at the end of its block"
            fence = None if fence is not None else stripped[3:].strip()
            continue
        if fence != "bash":
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command, pending = pending + line, ""
        if shlex.split(command, comments=True):
            commands.append((start, command))
    return commands


COMMANDS = [(page, number, command) for page in PAGES for number, command in shell_commands(page)]


class Parsed(Exception):
    """Raised right after a command line was parsed, before the command does any work."""

    def __init__(self, parsed):
        super().__init__("parsed")
        self.parsed = parsed


def gpu_only_flags(dataclass_types) -> list[str]:
    """``--bf16 false`` on a machine without a GPU: TrainingArguments refuses bf16 there."""
    import torch

    fields = {name for cls in dataclass_types for name in getattr(cls, "__dataclass_fields__", {})}
    return ["--bf16", "false"] if "bf16" in fields and not torch.cuda.is_available() else []


def check_config_paths(argv: list[str]) -> None:
    for flag in ("--config", "--config_file"):
        for index, token in enumerate(argv):
            if token == flag:
                path = argv[index + 1]
            elif token.startswith(flag + "="):
                path = token.split("=", 1)[1]
            else:
                continue
            assert (ROOT / path).exists(), f"{flag} {path}: no such file"


@contextlib.contextmanager
def launched_alone(monkeypatch, argv: list[str]):
    """With ``--ddp_backend``, TrainingArguments joins the process group a launcher set up: set up one
    of a single process, as `accelerate launch` would for process 0 of 1, and take it down after."""
    if "--ddp_backend" not in argv:
        yield
        return
    import torch.distributed
    from accelerate.state import AcceleratorState

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    with monkeypatch.context() as env:
        for key, value in {**launcher, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
            env.setenv(key, value)
        try:
            yield
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            AcceleratorState._reset_state(reset_partial_state=True)


def parse_only(monkeypatch, main, argv: list[str]):
    """What `main(argv)` parses its command line into, stopping it there (see `Parsed`)."""
    check_config_paths(argv)
    real_parse_config, inside = configs.parse_config, []

    def parse_config(dataclass_types, args=None):
        inside.append(True)
        try:
            parsed = real_parse_config(dataclass_types, [*args, *gpu_only_flags(dataclass_types)])
        finally:
            inside.pop()
        raise Parsed(parsed)

    def parse_args(self, args=None, namespace=None):
        parsed = REAL_PARSE_ARGS(self, args, namespace)
        if inside:  # a parser inside parse_config
            return parsed
        raise Parsed(parsed)

    module = sys.modules[main.__module__]
    with launched_alone(monkeypatch, argv), monkeypatch.context() as patch, pytest.raises(Parsed) as caught:
        patch.setattr(configs, "parse_config", parse_config)
        if hasattr(module, "parse_config"):
            patch.setattr(module, "parse_config", parse_config)
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        main(argv)
    return caught.value.parsed


def parse_stage(monkeypatch, module_name: str, argv: list[str]):
    assert module_name in STAGE_MODULES, f"{module_name} is not a ponder stage ({sorted(STAGE_MODULES)})"
    return parse_only(monkeypatch, importlib.import_module(module_name).main, argv)


def parse_accelerate_launch(monkeypatch, argv: list[str]):
    from accelerate.commands.launch import launch_command_parser

    check_config_paths(argv)
    launch = REAL_PARSE_ARGS(launch_command_parser(), argv)
    assert launch.module, "accelerate launch runs a stage as a module: -m ponder.training.<stage>"
    return parse_stage(monkeypatch, launch.training_script, launch.training_script_args)


def check_pipeline(monkeypatch, tmp_path, argv: list[str]) -> None:
    """Run `ponder pipeline` with every stage launch replaced by parsing that stage's command line."""
    from ponder.training import pipeline

    launched = []

    def run(command, *args, **kwargs):
        launcher = command.index("-m") + 1
        if command[launcher] == "accelerate.commands.launch":
            parse_accelerate_launch(monkeypatch, command[launcher + 1 :])
        else:
            parse_stage(monkeypatch, command[launcher], command[launcher + 1 :])
        launched.append(command)
        return subprocess.CompletedProcess(command, 0)

    def run_pipeline(recipe_dir, output_root, *options):  # outputs (stage markers) go to tmp_path
        return real_run_pipeline(recipe_dir, tmp_path / str(output_root).lstrip("/"), *options)

    real_run_pipeline = pipeline.run_pipeline
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "run_pipeline", run_pipeline)
        patch.setattr(pipeline, "summary", lambda output_root: "")
        patch.setattr(pipeline.subprocess, "run", run)
        pipeline.main(argv)
    recipe_dir = ROOT / next(arg for arg in argv if not arg.startswith("-"))
    expected = [stage for stage in pipeline.STAGE_ORDER if (recipe_dir / f"{stage}.yaml").exists()]
    assert len(launched) == len(expected), f"launched {len(launched)} stages, the folder has {expected}"


def check_ponder(monkeypatch, tmp_path, capsys, argv: list[str]) -> None:
    from ponder.training import cli

    if not argv or argv[0] in ("-h", "--help"):
        cli.main(argv)
        usage = capsys.readouterr().out
        assert all(stage in usage for stage in STAGES)
        return
    assert argv[0] in STAGES, f"ponder {argv[0]}: no such command ({', '.join(STAGES)})"
    if "--help" in argv or "-h" in argv:
        assert argv[1:] in (["--help"], ["-h"]), "run --help alone"
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code in (0, None)
        assert "--" in capsys.readouterr().out
    elif argv[0] == "pipeline":
        check_pipeline(monkeypatch, tmp_path, argv[1:])
    else:
        parse_stage(monkeypatch, STAGES[argv[0]][0], argv[1:])


def check_script(monkeypatch, script: str, argv: list[str]) -> None:
    """A repository script: its own `main` parses `argv`, and its --help works."""
    path = ROOT / script
    assert path.is_file() and path.parent.name == "benchmarks", f"{script}: not a script in benchmarks/"
    spec = importlib.util.spec_from_file_location(f"docs_command_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    parse_only(monkeypatch, lambda _argv: module.main(), argv)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exited:
        module.main()
    assert exited.value.code == 0


def check_setup(page: Path, tokens: list[str]) -> None:
    setup = [shlex.split(command) for command in SETUP_COMMANDS]
    assert tokens in setup, f"{shlex.join(tokens)!r} is not one of the set-up commands {SETUP_COMMANDS}"
    assert page.name == "README.md", "the set-up commands belong to the README"


@pytest.mark.parametrize("page, number, command", COMMANDS, ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in COMMANDS])
def test_documented_command(page, number, command, monkeypatch, tmp_path, capsys):
    tokens = shlex.split(command, comments=True)
    if shlex.join(tokens) in {shlex.join(shlex.split(known)) for known in OTHER_COMMANDS}:
        return
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    if tokens[0] == "pip" or tokens[:3] == ["python", "-m", "pytest"] or tokens[0] == "pytest":
        check_setup(page, tokens)
        tokens = tokens[tokens.index("ponder") :] if "ponder" in tokens else []
    if not tokens:
        return
    if tokens[0] == "ponder":
        check_ponder(monkeypatch, tmp_path, capsys, tokens[1:])
    elif tokens[:2] == ["python", "-m"] and tokens[2].startswith("ponder."):
        parse_stage(monkeypatch, tokens[2], tokens[3:])
    elif tokens[:2] == ["accelerate", "launch"]:
        parse_accelerate_launch(monkeypatch, tokens[2:])
    elif tokens[0] == "python" and tokens[1].endswith(".py"):
        check_script(monkeypatch, tokens[1], tokens[2:])
    else:
        pytest.fail(f"unknown command shape: {command.strip()!r}")


def test_readme_has_the_two_setup_commands_in_one_block():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    wanted = [shlex.split(command) for command in SETUP_COMMANDS]
    assert any(
        all(command in [shlex.split(line, comments=True) for line in block.splitlines()] for command in wanted)
        for block in blocks
    ), f"README.md needs one ```bash block holding exactly {SETUP_COMMANDS}"


def test_commands_were_found():
    assert {page.name for page, _, _ in COMMANDS} >= {"README.md"} and len(COMMANDS) >= 10


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_point_to_files_and_headings(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.relative_to(ROOT)}: link to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.relative_to(ROOT)}: link to {target}, which has no such heading"
