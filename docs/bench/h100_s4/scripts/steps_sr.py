"""ittybitty training steps (bench_train, batch 48), alternating in one process: bf16, FP8 with the e5m2 gradient
rounded to nearest, FP8 rounded stochastically."""
import json, sys
from tinylab import kernels as K
from tinylab.bench.gpu import bench_train, matmul_tflops
peak = matmul_tflops()
print(f"bf16 matmul ceiling: {peak:.0f} TFLOP/s", flush=True)
cases = [("bf16", "chunked", False)] + [("fp8 nearest", "chunked-fp8", False), ("fp8 stochastic", "chunked-fp8", True)] * 2
for name, loss, sr in cases:
    K.FP8_STOCHASTIC = sr
    row = bench_train("ittybitty", 48, compile=True, loss=loss, residual="bf16", warmup=3, steps=20, peak_tflops=peak)
    row.update(case=name, fp8_stochastic=sr)
    print(f"{name:16s} {row['step_ms']:7.1f} ms  {row['tok_per_s']:,.0f} tok/s  MFU {100 * row['mfu']:.1f}%  "
          f"spread {row['step_ms_spread']:.1f} ms  peak {row['peak_allocated_mib']:,.0f} MiB", flush=True)
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(row) + "\n")
