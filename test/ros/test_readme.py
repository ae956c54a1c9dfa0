"""README's commands and Python: every complete `vseg` command line in it parses with the real
command's parser (options, choices and value types), and its Python example runs as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from vseg_core import VideoSegmenter, load_checkpoint
from vseg_core.pretrained import shipped_checkpoint
from vseg_ros.cli import build_ros_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
# Placeholders and elisions mark a pattern, not a command to run.
_PATTERN = re.compile(r"\.\.\.|\||<|\bMODEL\b|\bNAME\b|\bDIR\b")


def _commands() -> list[str]:
    text = re.sub(r"\\\n\s*", " ", README)  # shell line continuations
    found = [m.group(1) for m in re.finditer(r"`(vseg [^`\n]+)`", text)]
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        found += [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("vseg ")]
    return sorted({c for c in found if not _PATTERN.search(c) and len(shlex.split(c)) > 2})


COMMANDS = _commands()


def test_the_readme_has_the_commands_users_need():
    subcommands = {shlex.split(c)[1] for c in COMMANDS}
    assert {"eval", "bench", "train", "bag", "node-bench"} <= subcommands


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses(command):
    try:
        args = build_ros_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as exc:
        pytest.fail(f"README command does not parse (exit {exc.code}): {command}")
    assert callable(args.handler)


def test_the_readme_python_example_runs_and_gives_the_shipped_models_labels():
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # the project's own README, run as users would
    frame = np.zeros((720, 1280, 3), np.uint8)
    expected = VideoSegmenter(load_checkpoint(shipped_checkpoint("camvid_lstm_icnet_v2_lite2_separable"))).step(frame)
    np.testing.assert_array_equal(namespace["result"].labels, expected.labels)
