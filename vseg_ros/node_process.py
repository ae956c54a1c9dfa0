"""segmentation_node in a process of its own, started as users start it (a parameters file and a
namespace), for the tools that drive and measure it from outside: demo, node-fuzz, node-bench --soak."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "NodeProcess", "NodeStartError", "executor_spinner", "resident_memory_mb", "start_matched_node",
    "start_node_process", "stop_node_process",
]  # fmt: skip

# A node that has announced itself (created its subscription and publishers) and is still not matched
# with the tool that drives it this much later will not be: DDS discovery between the two processes has
# stalled (seen on a loaded 2-core machine, the node alive and silent for minutes, in the demo and in
# node-fuzz). It is restarted; the last start gets the whole start timeout.
DISCOVERY_S = 30.0
NODE_STARTS = 2


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


class NodeProcess:
    """segmentation_node started by :func:`start_node_process`, with what its log says."""

    # SegmentationNode's one INFO line at the end of its start: "segmenting <topics> with ..."
    _ANNOUNCEMENT = b"]: segmenting "

    def __init__(self, params: dict[str, Any], *, namespace: str, workdir: Path, name: str) -> None:
        self.process, self.log = start_node_process(params, namespace=namespace, workdir=workdir, name=name)
        self.announced_at: float | None = None  # time.monotonic() when announced() first saw the line
        # The part of the log announced() has not searched yet starts here; it keeps the last few bytes
        # it searched so that the line is found even when a read ends inside it.
        self._unsearched = 0

    def exited(self) -> bool:
        return self.process.poll() is not None

    def announced(self) -> bool:
        """Whether the node has said it is segmenting (its subscription and publishers exist by then);
        the first time it is seen, the time is kept in ``announced_at``. Polled every spin, so it reads
        only what the log gained since the last call."""
        if self.announced_at is None:
            try:
                with self.log.open("rb") as log:
                    start = max(0, self._unsearched - len(self._ANNOUNCEMENT) + 1)
                    log.seek(start)
                    new = log.read()
            except OSError:
                return False
            if self._ANNOUNCEMENT in new:
                self.announced_at = time.monotonic()
            self._unsearched = start + len(new)
        return self.announced_at is not None

    def how_it_runs(self) -> str:
        """How the announcement says the model runs: "on DEVICE (PRECISION)" or "in onnxruntime
        (PROVIDERS)". Read it once the node has exited: a line may be only half written before."""
        text = self.log.read_text(errors="replace")
        marker = self._ANNOUNCEMENT.decode()
        line = next((line for line in text.splitlines() if marker in line), "")
        found = re.search(r" with \S+ ((?:on|in) .*)$", line.partition(marker)[2])
        if found is None:
            raise RuntimeError(f"the node did not say how it runs the model: {text[-2000:]}")
        return found.group(1).strip()

    def last_words(self) -> str:
        """The log line that says most: the first fatal one, else the last error, else the last line."""
        try:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        fatal = [line for line in lines if line.startswith("[FATAL]")]
        errors = [line for line in lines if line.startswith("[ERROR]")]
        return fatal[0] if fatal else errors[-1] if errors else lines[-1] if lines else ""

    def describe(self, what: str) -> str:
        """An error message about the node: segmentation_node WHAT (status S; log L, last said: ...)."""
        words = self.last_words()
        said = f", last said: {words}" if words else ""
        return f"segmentation_node {what} (status {self.process.poll()}; log {self.log}{said})"

    def stop(self, timeout_s: float = 60.0) -> int:
        return stop_node_process(self.process, timeout_s)


def executor_spinner(executor: Any, period_s: float) -> Callable[[Callable[[], bool], float], bool]:
    """``spin(predicate, timeout_s)`` for :func:`start_matched_node`: ``executor`` spun ``period_s`` at a
    time until ``predicate()`` holds or ``timeout_s`` passes; whether it holds."""

    def spin(predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=period_s)
        return predicate()

    return spin


class NodeStartError(RuntimeError):
    """The node exited while starting, or was not matched within the start timeout; already stopped."""


def start_matched_node(
    params: dict[str, Any],
    *,
    namespace: str,
    workdir: Path,
    name: str,
    missing: Callable[[], list[str]],
    spin: Callable[[Callable[[], bool], float], bool],
    timeout_s: float,
    label: str = "",
    on_restart: Callable[[str], None] = lambda message: None,
) -> tuple[NodeProcess, int]:
    """Start the node and wait until the caller's side of the graph sees it; return it and its starts.

    missing: what the caller does not see of the node yet (its subscription matched, its publishers),
    empty once it is ready. spin(predicate, timeout_s): the caller's executor spun until predicate()
    holds or timeout_s passes; whether it holds. A node that announced itself and is still missing
    something DISCOVERY_S later is stopped and started again as NAME.startN (its first log kept), up to
    NODE_STARTS starts; on_restart gets a line saying why. label: who the node is for, in messages
    ("for icnet"). Raises :class:`NodeStartError` (the node stopped) when a node exits while starting
    or the last start is not ready within ``timeout_s``; anything ``spin`` raises stops it too.
    """
    starts = 1
    node = NodeProcess(params, namespace=namespace, workdir=workdir, name=name)
    what = f"{label} " if label else ""
    try:
        while True:
            last = starts >= NODE_STARTS

            def settled(node: NodeProcess = node, last: bool = last) -> bool:
                """Ready or exited; before the last start also: announced and unmatched for too long."""
                if node.exited() or not missing():
                    return True
                return not last and node.announced() and time.monotonic() - node.announced_at >= DISCOVERY_S

            if not spin(settled, timeout_s):
                unseen = "; ".join(missing())
                raise NodeStartError(
                    node.describe(f"{what}did not come up within {timeout_s:g} s (start {starts}; missing: {unseen})")
                )
            if node.exited():
                raise NodeStartError(node.describe(f"{what}could not start"))
            unseen = missing()
            if not unseen:
                return node, starts
            on_restart(
                f"the node said it was segmenting {DISCOVERY_S:g} s ago but DDS has not matched it "
                f"(missing: {'; '.join(unseen)}); restarting it (log {node.log})"
            )
            node.stop()
            starts += 1
            node = NodeProcess(params, namespace=namespace, workdir=workdir, name=f"{name}.start{starts}")
    except BaseException:
        node.stop()
        raise


def resident_memory_mb(pid: int) -> float:
    """The resident memory (VmRSS) of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for process {pid}")
