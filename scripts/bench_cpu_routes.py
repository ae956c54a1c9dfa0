"""The other CPU routes for a shipped model's network, against eager, in one run (a benchmark).

    python scripts/bench_cpu_routes.py camvid_icnet_lite2 camvid_deeplab_lite0 --height 360 --width 480

Times the network's forward on one (1, 3, H, W) frame, median of --frames after --warmup, the
routes taking turns frame by frame, for:
eager; channels-last; TorchScript traced, frozen and optimized for inference (oneDNN fusions);
torch.compile (inductor, default mode; its compile time is printed). Labels are compared with
eager's. End to end through ``VideoSegmenter`` against ONNX Runtime: ``vseg bench --backend torch
--backend onnxruntime`` (README). Single-frame checkpoints only: the ConvLSTM and keyframe models
carry state that these routes would need per model.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from vseg_core.checkpoint import load_checkpoint
from vseg_core.pretrained import checkpoint_path


def _interleaved_ms(routes: dict, frames: int, warmup: int) -> dict[str, float]:
    """Median ms per route, the routes taking turns frame by frame (a noisy machine's drift is shared)."""
    times: dict[str, list[float]] = {name: [] for name in routes}
    with torch.inference_mode():
        for i in range(warmup + frames):
            for name, (fn, x) in routes.items():
                start = time.perf_counter()
                fn(x)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] * 1000 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="shipped names or paths of single-frame checkpoints")
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    x = torch.rand(1, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
    print(
        "| checkpoint | eager ms | channels-last | TorchScript frozen | torch.compile (compile s) | labels as eager |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name in args.checkpoints:
        model = load_checkpoint(checkpoint_path(name)).eval()
        with torch.no_grad():
            reference = model(x).argmax(1)
        routes = {"eager": (model, x)}
        last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        routes["channels_last"] = (last, x.contiguous(memory_format=torch.channels_last))
        agree, scripted = [], None
        try:
            with torch.no_grad():
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
                frozen(x)
            routes["torchscript"] = (frozen, x)
            agree.append(f"TS {(frozen(x).argmax(1) == reference).float().mean().item():.4%}")
        except Exception as exc:  # a traced op the interpreter cannot run: reported, not fatal
            scripted = f"fails: {type(exc).__name__}"
        start = time.perf_counter()
        compiled = torch.compile(model)
        with torch.no_grad():
            agree.append(f"compile {(compiled(x).argmax(1) == reference).float().mean().item():.4%}")
        build = time.perf_counter() - start
        routes["compile"] = (compiled, x)
        ms = _interleaved_ms(routes, args.frames, args.warmup)
        scripted = scripted or f"{ms['torchscript']:.1f}"
        print(
            f"| {name} | {ms['eager']:.1f} | {ms['channels_last']:.1f} | {scripted} "
            f"| {ms['compile']:.1f} ({build:.0f}) | {', '.join(agree)} |"
        )


if __name__ == "__main__":
    main()
