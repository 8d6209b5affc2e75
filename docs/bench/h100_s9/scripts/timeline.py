"""Session 8 (NICE: the data child's niceness). Session 7 probe (session 6's, with EARLY: the data child started before tinylab.train's import, as the
command does; the checkpoint writer and precompile_kernels wrapped): where the real run's time goes outside the steps. Runs tinylab.train's main() with every phase
function wrapped to print (wall start, wall end, thread, name), plus the import of tinylab.train and the exit."""
import time; T0 = time.time()
import atexit, os, sys, threading
atexit.register(lambda: print(f"TL {time.time():.3f} atexit-last", flush=True))  # registered first: runs last
print(f"TL {T0:.3f} python-start", flush=True)
if os.environ.get("NICE"):  # session 8: the data child's niceness
    import tinylab.prepare as _tp; _tp.DATA_NICENESS = int(os.environ["NICE"])
if os.environ.get("EARLY"):  # what `python -m tinylab.train` does before its imports (tinylab.launch)
    from tinylab.launch import start_data_early
    start_data_early(sys.argv[1:])
    print(f"TL {time.time():.3f} start_data_early", flush=True)
import tinylab.train as tt
print(f"TL {time.time():.3f} imported tinylab.train", flush=True)
if os.environ.get("RESET_ALWAYS"):  # session 8: compile_model emptying Dynamo's caches on every call, the first too
    _cm = tt.compile_model
    def _reset_then_compile(*a, **k):
        import torch._dynamo
        t = time.time(); torch._dynamo.reset()
        print(f"TL {t:.3f} {time.time():.3f} {threading.current_thread().name} dynamo-reset", flush=True)
        return _cm(*a, **k)
    tt.compile_model = _reset_then_compile
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

for n in ["start_compile_workers", "precompile_kernels"]:
    if hasattr(tt, n): wrap(tt, n)
for n in ["setup_distributed", "prepare", "warm_up", "release_compile_workers", "load_data", "start_data_child",
          "run_samples", "check_memory", "make_loaders", "load_tokenizer"]:
    wrap(tt, n)
for n in ["__init__", "build_model", "build_forward", "write_run_files", "loop", "finish", "evaluate", "save", "build"]:
    wrap(tt.Trainer, n, "Trainer." + n)
wrap(tt.Background, "result", "Background.result")
if hasattr(checkpoint, "CheckpointWriter"):
    wrap(checkpoint.CheckpointWriter, "save", "CheckpointWriter.save")
    wrap(checkpoint.CheckpointWriter, "wait", "CheckpointWriter.wait")
    wrap(checkpoint, "write_checkpoint")
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
    r = _imp(name, *a, **k)
    if name.startswith("torch._inductor.compile_fx"):
        print(f"TL {t:.3f} {time.time():.3f} {threading.current_thread().name} import {name}", flush=True)
    return r
tt.importlib.import_module = imp
rc = tt.cli(tt.main)
if hasattr(tt, "exit_now"):
    print(f"TL {time.time():.3f} main-returned {rc} (exit_now)", flush=True)
    tt.exit_now(rc)
try:
    import torch._dynamo.utils as du
    print(du.compile_times(repr="str", aggregate=True), flush=True)
except Exception as e:
    print("compile_times:", e)
print(f"TL {time.time():.3f} main-returned {rc}", flush=True)
sys.exit(rc)
