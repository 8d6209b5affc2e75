"""Session 6 probe: where the real run's time goes outside the steps. Runs tinylab.train's main() with every phase
function wrapped to print (wall start, wall end, thread, name), plus the import of tinylab.train and the exit."""
import time; T0 = time.time()
import atexit, os, sys, threading
atexit.register(lambda: print(f"TL {time.time():.3f} atexit-last", flush=True))  # registered first: runs last
print(f"TL {T0:.3f} python-start", flush=True)
import tinylab.train as tt
print(f"TL {time.time():.3f} imported tinylab.train", flush=True)
from tinylab import checkpoint, evaluate

def wrap(owner, name, label=None):
    fn = getattr(owner, name)
    def inner(*a, **k):
        t = time.time()
        try:
            return fn(*a, **k)
        finally:
            print(f"TL {t:.3f} {time.time():.3f} {threading.current_thread().name} {label or name}", flush=True)
    setattr(owner, name, inner)

if os.environ.get("EAGER_EVAL"):  # evaluation runs the model eagerly: no inference graphs to compile
    _bf = tt.Trainer.build_forward
    def build_forward(self):
        _bf(self); self.eval_model = self.model
    tt.Trainer.build_forward = build_forward
    _wu = tt.warm_up
    def warm_up(net, model, cfg, device, autocast):
        return _wu_train_only(net, model, cfg, device, autocast)
    def _wu_train_only(net, model, cfg, device, autocast):
        import torch
        B, T = cfg.batch.device_batch_size, cfg.model.sequence_len
        buf = torch.zeros(B * T + 1, dtype=torch.int64, device=device)
        with autocast:
            loss = net(buf[:-1].view(B, T), buf[1:].view(B, T))
        loss.backward()
        model.zero_grad(set_to_none=True)
    tt.warm_up = warm_up
for n in ["start_compile_workers"]:
    if hasattr(tt, n): wrap(tt, n)
for n in ["setup_distributed", "prepare", "warm_up", "release_compile_workers", "load_data", "start_data_child",
          "run_samples", "check_memory", "make_loaders", "load_tokenizer"]:
    wrap(tt, n)
for n in ["__init__", "build_model", "build_forward", "write_run_files", "loop", "finish", "evaluate", "save", "build"]:
    wrap(tt.Trainer, n, "Trainer." + n)
wrap(tt.Background, "result", "Background.result")
import os
if os.environ.get("PROBE_TRITON"):  # every in-process Triton compile (tinylab's kernels; Inductor's before its pool is up)
    import triton, triton.compiler
    _compile = triton.compiler.compile
    def compile_logged(src, *a, **k):
        t = time.time(); r = _compile(src, *a, **k)
        print(f"TL {t:.3f} {time.time():.3f} {threading.current_thread().name} triton-compile {getattr(src, 'name', '?')}", flush=True)
        return r
    triton.compile = triton.compiler.compile = compile_logged
_imp = tt.importlib.import_module
def imp(name, *a, **k):
    t = time.time()
    if os.environ.get("EARLY_POOL") and name.startswith("torch._inductor.compile_fx") and not hasattr(tt, "start_compile_workers"):
        from torch._inductor.async_compile import maybe_warm_pool
        maybe_warm_pool()
        print(f"TL {t:.3f} {time.time():.3f} main maybe_warm_pool", flush=True)
    r = _imp(name, *a, **k)
    if name.startswith("torch._inductor.compile_fx"):
        print(f"TL {t:.3f} {time.time():.3f} main import {name}", flush=True)
    return r
tt.importlib.import_module = imp
rc = tt.cli(tt.main)
if hasattr(tt, "exit_now"):
    print(f"TL {time.time():.3f} main-returned {rc} (exit_now)", flush=True)
    tt.exit_now(rc)
if os.environ.get("EXIT_FAST"):
    print(f"TL {time.time():.3f} main-returned {rc} (os._exit)", flush=True)
    sys.stdout.flush(); sys.stderr.flush(); os._exit(rc)
try:
    import torch._dynamo.utils as du
    print(du.compile_times(repr="str", aggregate=True), flush=True)
except Exception as e:
    print("compile_times:", e)
print(f"TL {time.time():.3f} main-returned {rc}", flush=True)
sys.exit(rc)
