"""segmentation_node in a process of its own, started as users start it (a parameters file and a
namespace), for the tools that drive and measure it from outside: demo, node-fuzz, node-bench --soak."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["resident_memory_mb", "start_node_process"]


def start_node_process(
    params: dict[str, Any], *, namespace: str, workdir: Path, name: str
) -> tuple[subprocess.Popen, Path]:
    """Write ``params`` to ``workdir/NAME.params.yaml`` and start the node on it in ``namespace``;
    return the process and its log, ``workdir/NAME.node.log``. The output goes to a file, not a pipe:
    a pipe nobody reads can fill up and block the node."""
    params_file = workdir / f"{name}.params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    log = workdir / f"{name}.node.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "vseg_ros.segmentation_node", "--ros-args", "--params-file", str(params_file),
             "-r", f"__ns:={namespace}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return process, log


def stop_node_process(process: subprocess.Popen, timeout_s: float = 60.0) -> int:
    """Stop the node as launch does (SIGINT, then SIGKILL after ``timeout_s``); its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def resident_memory_mb(pid: int) -> float:
    """The resident memory (VmRSS) of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for process {pid}")
