"""Session 7, CPU checks (this machine, no GPU): (1) does safetensors' save_file hold the GIL while it writes 0.4 GB? (2) does
Triton hold it while it compiles the loss kernel for sm_90? Each runs the work on a thread while the main thread spins,
and prints (iterations, longest pause) of the spin, against the spin alone."""
import sys
print("== safetensors")
import threading, time, torch, os
from safetensors.torch import save_file
ts = {f"t{i}": torch.randn(25_000_000 // 8) for i in range(32)}  # ~400 MB fp32 total
def spin(sec):
    n=0; t=time.perf_counter()
    gaps=[]; last=t
    while time.perf_counter()-t < sec:
        n+=1; now=time.perf_counter(); gaps.append(now-last); last=now
    return n, max(gaps)
print("alone", spin(1.0))
t0=time.perf_counter(); save_file(ts, "/tmp/x.st"); print("save sync", time.perf_counter()-t0)
th=threading.Thread(target=lambda: save_file(ts, "/tmp/y.st")); t0=time.perf_counter(); th.start()
print("with save thread", spin(1.0)); th.join(); print("thread done", time.perf_counter()-t0)
os.remove("/tmp/x.st"); os.remove("/tmp/y.st")
print("== triton")
import threading, time, os
os.environ["TRITON_CACHE_DIR"] = "/tmp/tgil_cache"
import shutil; shutil.rmtree("/tmp/tgil_cache", ignore_errors=True)
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import tinylab.kernels as K
def comp():
    src = ASTSource(fn=K._softcap_ce_kernel, signature={"logits_ptr":"*bf16","stride":"i32","targets_ptr":"*i64","loss_ptr":"*fp32","grad_ptr":"*bf16","grad_stride":"i32","n_cols":"i32","softcap":"fp32","grad_scale":"fp32","BLOCK":"constexpr","GRAD":"constexpr","E5M2":"constexpr","APPROX":"constexpr"},
        constexprs={"BLOCK":8192,"GRAD":True,"E5M2":False,"APPROX":True})
    t=time.perf_counter(); triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=16)); return time.perf_counter()-t
def spin(sec):
    t=time.perf_counter(); last=t; g=0; n=0
    while time.perf_counter()-t<sec:
        now=time.perf_counter(); g=max(g,now-last); last=now; n+=1
    return n, g
print("compile alone", comp())
shutil.rmtree("/tmp/tgil_cache", ignore_errors=True)
r={}
th=threading.Thread(target=lambda: r.setdefault("t", comp())); th.start(); print("spin during compile", spin(1.5)); th.join(); print("compile in thread", r)
print("spin alone", spin(1.5))
