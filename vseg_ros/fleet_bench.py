"""`vseg bag eval-bench`: the same many-bag evaluation in 1 and in N processes, timed in one run.

Writes a set of synthetic bags (one scene each), then runs ``vseg bag eval FOLDER`` as users run
it (a fresh process each, start-up included), alternating when repeated:

- 1 process and N processes (``--workers N``) with the same threads each (``--threads``, default
  1): how the evaluation scales with ranks that each own the same compute (a GPU, a core);
- 1 process with torch's default threads (every core): what N processes gain on one machine over
  the threads torch uses anyway.

The merged reports must agree exactly: the confusion matrices, overall and per stream.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FleetBenchResult", "measure_fleet_scaling"]


@dataclass(frozen=True)
class FleetBenchResult:
    bags: int
    frames: int  # evaluated in each run, all bags together
    workers: int
    threads: int  # per process, in the 1- and N-process runs
    one_s: float  # best wall time of 1 process
    many_s: float  # best wall time of N processes
    all_cores_s: float  # best wall time of 1 process with torch's default threads
    identical: bool  # merged and per-stream confusion matrices equal, in every run

    @property
    def speedup(self) -> float:
        """N processes against 1, the same threads each."""
        return self.one_s / self.many_s

    @property
    def speedup_over_all_cores(self) -> float:
        return self.all_cores_s / self.many_s


def _run(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{' '.join(command[3:6])} ... failed (exit {result.returncode}): {last[0]}")
    return elapsed


def _confusions(out: Path) -> tuple[list, dict[str, list]]:
    report = json.loads((out / "report.json").read_text())
    return report["overall"]["confusion"], {s["stream"]: s["confusion"] for s in report["streams"]}


def measure_fleet_scaling(
    *,
    bags: int = 8,
    frames: int = 100,
    workers: int = 2,
    model: str = "icnet",
    weights: str | None = None,
    height: int = 256,
    width: int = 512,
    threads: int = 1,
    repeat: int = 1,
) -> FleetBenchResult:
    """Wall times of evaluating ``bags`` synthetic bags of ``frames`` frames (see the module docstring)."""
    from vseg_core.evaluate import evaluation_sequences
    from vseg_ros.bag_tools import write_sequences_bag

    if bags < 1 or frames < 2 or workers < 2 or threads < 1 or repeat < 1:
        raise ValueError("need bags >= 1, frames >= 2, workers >= 2, threads >= 1 and repeat >= 1")
    with tempfile.TemporaryDirectory(prefix="vseg-eval-bench-") as tmp:
        root = Path(tmp)
        sequences, palette = evaluation_sequences(
            "synthetic", split="val", sequences=bags, frames=frames, height=height, width=width
        )
        for i, sequence in enumerate(sequences):
            write_sequences_bag([sequence], [15.0], root / "bags" / f"drive{i:02d}", label_classes=palette.names)
        base = [sys.executable, "-m", "vseg_ros.cli", "bag", "eval", str(root / "bags")]
        base += ["--image-topic", "/camera/image_raw", "--label-topic", "/camera/labels", "--model", model]
        base += ["--weights", weights] if weights else ["--classes", "synthetic"]
        runs = {
            "one": ["--workers", "1", "--threads", str(threads)],
            "many": ["--workers", str(workers), "--threads", str(threads)],
            "all_cores": ["--workers", "1"],
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(repeat):
            for name, extra in runs.items():
                times[name].append(_run([*base, "--out", str(root / f"{name}.{r}"), *extra]))
        reference = _confusions(root / "one.0")
        identical = all(_confusions(root / f"{name}.{r}") == reference for name in runs for r in range(repeat))
    best = {name: min(t) for name, t in times.items()}
    return FleetBenchResult(
        bags, bags * frames, workers, threads, best["one"], best["many"], best["all_cores"], identical
    )
