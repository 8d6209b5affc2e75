"""The 200-step loss A/B of 2026-11-26 (bf16 twice, FP8, the bf16-logits/FP8-backward hybrid): the plot and the
table's numbers. Run from the repository root: python docs/bench/h100_ce/scripts/plot_ab.py"""
import json
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

D = Path("docs/bench/h100_ce")
RUNS = {"bf16": "bf16", "bf16-again": "bf16, the same run again", "fp8": "FP8 lm_head", "hybrid": "hybrid: bf16 logits, FP8 backward"}


def load(name):
    rows = [json.loads(l) for l in open(D / f"ab_{name}_200steps_metrics.jsonl")]
    train = {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}
    val = [r["val_bpb"] for r in rows if r["kind"] == "eval"][-1]
    steps = np.arange(10, 201, 10)
    return steps, np.array([train[k] for k in steps]), val  # each train line: the mean loss of its 10 steps


data = {n: load(n) for n in RUNS}
steps = data["bf16"][0]
ref = (data["bf16"][1] + data["bf16-again"][1]) / 2
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
for n, label in RUNS.items():
    a.plot(steps, data[n][1], label=label)
    b.plot(steps, data[n][1] - ref, label=label)
a.set(xlabel="step", ylabel="train loss (mean of 10 steps)", title="ittybitty, 200 steps, seed 42", ylim=(2.5, 4.5))
b.axhline(0, color="grey", lw=0.5)
b.set(xlabel="step", ylabel="− mean of the two bf16 runs", title="difference")
a.legend()
fig.tight_layout()
fig.savefig(D / "loss_curve_ab.png", dpi=110)
late = steps > 100
print("| run | mean |Δ| | largest |Δ| | mean Δ | mean Δ, steps 100–200 | val bpb at 200 |")
for n, label in RUNS.items():
    d = data[n][1] - ref
    print(f"| {label} | {np.abs(d).mean():.4f} | {np.abs(d).max():.4f} | {d.mean():+.4f} | {d[late].mean():+.4f} | {data[n][2]:.4f} |")
