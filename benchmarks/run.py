"""Every benchmark the issues ask for, in one run, written to benchmarks/RESULTS.md (and printed).

    python benchmarks/run.py            # or: make bench

Each benchmark script prints its figures; this runner runs them one after another (never concurrently: the
figures are timings on a shared machine), picks the figures out of their output, and writes one table with
each figure, its target, the baseline measured in the same run, and the machine.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


@dataclass
class Figure:
    name: str
    value: str
    target: str
    baseline: str
    met: bool | None


def run(script: str, *args: str) -> str:
    print(f"$ python benchmarks/{script} {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    print(result.stdout, flush=True)
    if result.returncode != 0:
        raise SystemExit(f"{script} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"figure not found: {pattern!r}")
    return float(match.group(1))


def extraction(size: int) -> list[Figure]:
    out = run("features.py", "--size", str(size))
    per_frame = number(r"\(a\) per-frame predict\s+([\d.]+)", out)
    ours = number(r"videosweep \(JPEG -> feats\)\s+([\d.]+)", out)
    in_memory = number(r"\(b\) in-memory batched loop\s+([\d.]+)", out)
    whole = number(r"([\d.]+) frames/s with them", out)
    figures = [Figure(f"batched feature extraction, mobilenet_v2 {size}x{size}", f"{ours / per_frame:.1f}x "
                      f"per-frame predict ({ours:.0f} frames/s; {whole / per_frame:.1f}x counting the one-off "
                      "build and freeze, 725 frames)", ">= 10x", f"per-frame {per_frame:.1f} frames/s; "
                      f"in-memory limit {in_memory:.0f} frames/s ({ours / in_memory:.2f}x of it)",
                      ours / per_frame >= 10)]
    if size == 224:
        held = number(r"held ([\d.]+)x features", out)
        peak = number(r"peak ([\d.]+)x", out)
        figures.append(Figure("windowing memory (sequence_length 20, seals features)", f"{held:.3f}x held, "
                              f"{peak:.2f}x peak", "<= 1.2x features", "materialised windows: " +
                              re.search(r"materialised windows: ([\d.]+x)", out).group(1), held <= 1.2))
    return figures


def sweeps() -> list[Figure]:
    out = run("sweeps.py", "--trials", "40", "--scaling-trials", "80")
    marginal = number(r"per-trial overhead: ([\d.]+) s per trial", out)
    amortised = number(r"= ([\d.]+) s per trial amortised", out)
    ratio = number(r"-> ([\d.]+)x;", out)
    steady = number(r"steady state ([\d.]+)x", out)
    one = number(r"1 slot ([\d.]+) s", out)
    return [Figure("per-trial overhead", f"{marginal:.2f} s marginal, {amortised:.2f} s amortised over 40",
                   "< 0.5 s per trial (marginal)", "a bare Keras loop over the same trials in one warm process; "
                   "the fixed part is paid once per sweep", marginal < 0.5),
            Figure("2 slots vs 1 slot (80 tiny trials, ~1 s each)", f"{ratio:.2f}x the time (steady state "
                   f"{steady:.2f}x)", "<= 0.6x", f"1 slot {one:.0f} s, of which ~5 s start-up that slots do not "
                   "shorten", ratio <= 0.6)]


def claims() -> list[Figure]:
    out = run("claims.py", "--workers", "4", "--trials", "400")
    figures = []
    for storage in ("sqlite", "postgresql"):
        match = re.search(rf"{storage}: ([\d.]+) claims/s .*median ([\d.]+) ms, p95 ([\d.]+) ms", out)
        if match:
            rate, median, p95 = map(float, match.groups())
            figures.append(Figure(f"claim throughput, 4 workers, {storage}", f"{rate:.0f} claims/s",
                                  "measured (no target)", f"bookkeeping per trial median {median:.0f} ms, "
                                  f"p95 {p95:.0f} ms", None))
    return figures


def halving() -> list[Figure]:
    out = run("halving.py")
    full_s, full_e, full_acc = (number(r"every trial fully\s+([\d.]+) s", out),
                                number(r"every trial fully\s+[\d.]+ s\s+(\d+) epochs", out),
                                number(r"every trial fully.*best val_accuracy ([\d.]+)", out))
    sh_s, sh_e, sh_acc = (number(r"successive halving\s+([\d.]+) s", out),
                          number(r"successive halving\s+[\d.]+ s\s+(\d+) epochs", out),
                          number(r"successive halving.*best val_accuracy ([\d.]+)", out))
    without = number(r"epoch budget without schedule (\d+)", out)
    with_ = number(r"epoch budget with schedule\s+(\d+)", out)
    return [Figure("successive halving, 27-trial grid of tiny models (9 epochs, factor 3)",
                   f"{sh_s:.0f} s, {sh_e:.0f} epochs, best val_accuracy {sh_acc:.4f}", "measured (no target)",
                   f"every trial fully: {full_s:.0f} s, {full_e:.0f} epochs, best val_accuracy {full_acc:.4f}", None),
            Figure("research grid epoch budget with successive halving (factor 3)", f"{with_:.0f} epochs",
                   "measured (arithmetic from the plan)", f"{without:.0f} epochs without the schedule", None)]


def machine() -> str:
    import psutil

    return (f"{platform.node()}: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, no GPU used")


def write(figures: list[Figure], profile: str) -> None:
    mark = {True: "yes", False: "**no**", None: "-"}
    lines = ["# Benchmark results", "", f"Measured {dt.datetime.now():%Y-%m-%d %H:%M} on {machine()} by "
             "`python benchmarks/run.py`; each baseline was measured in the same run.", "",
             "| figure | measured | target | met | baseline |", "|---|---|---|---|---|"]
    lines += [f"| {f.name} | {f.value} | {f.target} | {mark[f.met]} | {f.baseline} |" for f in figures]
    lines += ["", "## Where one demo trial's time goes", "", "```", profile.strip(), "```"]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(RESULTS.read_text())


def main() -> None:
    figures = extraction(224) + extraction(96) + sweeps() + claims() + halving()
    write(figures, run("profile_trial.py"))


if __name__ == "__main__":
    main()
