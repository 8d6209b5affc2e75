"""The 200-step A/B of session 12 (call 14): train loss of each run every 10 steps (each line is the mean of its 10
steps) against the mean of the two Triton runs; a table on stdout and loss_curve_ab.png. Run from this folder."""
import json

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUNS = ["triton1", "triton2", "cute1", "cute2"]
curves, bpb = {}, {}
for r in RUNS:
    rows = [json.loads(line) for line in open(f"call14/ab_{r}.jsonl")]
    curves[r] = {x["step"]: x["loss"] for x in rows if x["kind"] == "train"}
    bpb[r] = [x["val_bpb"] for x in rows if x["kind"] == "eval"][-1]
steps = sorted(curves["triton1"])
base = {s: (curves["triton1"][s] + curves["triton2"][s]) / 2 for s in steps}
print("| run − mean of the two Triton runs | mean |Δ| | largest |Δ| | mean Δ | mean Δ, steps 100–200 | val bpb at 200 |")
print("|---|---:|---:|---:|---:|---:|")
for r in RUNS:
    d = [curves[r][s] - base[s] for s in steps]
    late = [curves[r][s] - base[s] for s in steps if s > 100]
    print(f"| {r} | {sum(map(abs, d)) / len(d):.4f} | {max(map(abs, d)):.4f} | {sum(d) / len(d):+.4f} | "
          f"{sum(late) / len(late):+.4f} | {bpb[r]:.4f} |")
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
for r in RUNS:
    style = "-" if r.startswith("cute") else "--"
    a.plot(steps, [curves[r][s] for s in steps], style, label=r)
    b.plot(steps, [curves[r][s] - base[s] for s in steps], style, label=r)
a.set(xlabel="step", ylabel="train loss (10-step mean)", yscale="log", title="ittybitty, 200 steps, seed 42")
b.set(xlabel="step", ylabel="Δ against the mean of the Triton runs", title="tinylab.cute (solid) vs Triton (dashed)")
b.axhline(0, color="gray", lw=0.5)
a.legend(); b.legend()
fig.tight_layout()
fig.savefig("loss_curve_ab.png", dpi=110)
