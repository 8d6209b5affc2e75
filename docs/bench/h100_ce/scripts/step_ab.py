"""ittybitty training steps (tinylab.bench's bench_train) with the loss kernel's tile and the lm_head chunk varied,
alternating, in one process."""
import json, sys
from tinylab import kernels as K, loss as L
from tinylab.bench.gpu import bench_train, matmul_tflops
peak = matmul_tflops()
print(f"bf16 matmul ceiling: {peak:.0f} TFLOP/s", flush=True)
OLD, NEW = dict(BLOCK=4096, num_warps=8), dict(BLOCK=8192, num_warps=16)
cases = [("old tile", OLD, 8192, "chunked"), ("new tile", NEW, 8192, "chunked"), ("new tile, chunk 16384", NEW, 16384, "chunked"),
         ("new tile, chunk 4096", NEW, 4096, "chunked"), ("old tile", OLD, 8192, "chunked"), ("new tile", NEW, 8192, "chunked"),
         ("old tile fp8", OLD, 8192, "chunked-fp8"), ("new tile fp8", NEW, 8192, "chunked-fp8")]
defaults = L.linear_cross_entropy.__defaults__
for name, tile, chunk, loss in cases:
    K.CE_TILE = tile
    L.linear_cross_entropy.__defaults__ = (defaults[0], chunk, defaults[2])
    row = bench_train("ittybitty", 48, compile=True, loss=loss, residual="bf16", warmup=3, steps=20, peak_tflops=peak)
    row.update(case=name, ce_tile=tile, chunk=chunk)
    print(f"{name:24s} {row['step_ms']:7.1f} ms  {row['tok_per_s']:,.0f} tok/s  MFU {100 * row['mfu']:.1f}%  "
          f"spread {row['step_ms_spread']:.1f} ms  peak {row['peak_allocated_mib']:,.0f} MiB", flush=True)
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(row) + "\n")
