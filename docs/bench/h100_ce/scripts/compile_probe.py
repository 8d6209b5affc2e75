"""Where the compile warm-up's time goes (run with fresh or warm TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR).
mode full: warm_up's three parts timed; kernels: tinylab's own Triton kernels called once eagerly first (their JIT
time), then the same; regional: only the blocks compiled."""
import sys, time
t0 = time.perf_counter()
import torch
import torch._inductor.compile_fx  # noqa
from torch._inductor import config as ic
from tinylab.model import build_model
from tinylab.presets import get_preset
from tinylab.devices import autocast as device_autocast
mode = sys.argv[1]
import os
if os.environ.get("WARM_POOL") == "1":  # start Inductor's compile workers now, not when the first graph reaches it
    from torch._inductor.async_compile import maybe_warm_pool
    maybe_warm_pool()
    mode += "+pool"
t_imp = time.perf_counter() - t0
cfg = get_preset("ittybitty")
dev = torch.device("cuda")
model = build_model(cfg.model, device=dev, loss="chunked")
ac = device_autocast(dev)
B, T = cfg.batch.device_batch_size, cfg.model.sequence_len
buf = torch.randint(0, cfg.model.vocab_size, (B * T + 1,), device=dev)
x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
torch.cuda.synchronize()
print(f"[{mode}] imports {t_imp:.1f} s, compile_threads {ic.compile_threads}", flush=True)
def tm(label, fn):
    s = time.perf_counter(); r = fn(); torch.cuda.synchronize(); print(f"[{mode}] {label}: {time.perf_counter() - s:.2f} s", flush=True); return r
if mode == "kernels":
    from tinylab import kernels as Kn
    from tinylab.loss import linear_cross_entropy
    h = torch.randn(B * T, 512, device=dev, dtype=torch.bfloat16, requires_grad=True)
    w1 = torch.randn(2048, 512, device=dev, dtype=torch.bfloat16, requires_grad=True)
    w2 = torch.randn(512, 2048, device=dev, dtype=torch.bfloat16, requires_grad=True)
    tm("relu2_mlp fwd (TMA kernel JIT)", lambda: Kn.relu2_mlp(h, w1, w2)[0])
    yy, a = Kn.relu2_mlp(h, w1, w2)
    tm("relu2_mlp bwd (dh kernel JIT)", lambda: yy.sum().backward())
    q = torch.randn(B, T, 8, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
    c, s_ = model.cos[:, :T], model.sin[:, :T]
    tm("rope fwd JIT", lambda: Kn.rope_rms_norm(q, c, s_))
    tm("rope bwd JIT", lambda: Kn.rope_rms_norm_backward(q.detach(), q.detach(), c, s_))
    wl = torch.randn(24576, 512, device=dev, requires_grad=True)
    tm("lm_head loss (CE kernel JIT)", lambda: linear_cross_entropy(h, wl, y.reshape(-1), 15.0).backward())
if mode == "regional":
    for blk in model.transformer.h:
        blk.compile()
    net = model
else:
    net = torch.compile(model)
def fwd():
    with ac:
        return net(x, y)
t1 = time.perf_counter()
loss = tm("train forward (first call)", fwd)
tm("train backward (first call)", lambda: loss.backward())
model.zero_grad(set_to_none=True)
rows = min(B, max(1, cfg.eval.eval_tokens // T))
def ev():
    with torch.no_grad(), ac:
        return net(buf[:rows * T].view(rows, T), buf[1:rows * T + 1].view(rows, T), loss_reduction="none")
tm("eval forward (first call)", ev)
print(f"[{mode}] warm-up total {time.perf_counter() - t1:.1f} s", flush=True)
for i in range(3):
    fwd().backward()
torch.cuda.synchronize()
s0, s1 = torch.cuda.Event(True), torch.cuda.Event(True)
s0.record()
for i in range(10):
    fwd().backward()
s1.record(); torch.cuda.synchronize()
print(f"[{mode}] micro-step fwd+bwd {s0.elapsed_time(s1) / 10:.2f} ms", flush=True)
s0.record()
for i in range(10):
    ev()
s1.record(); torch.cuda.synchronize()
print(f"[{mode}] eval forward {s0.elapsed_time(s1) / 10:.2f} ms", flush=True)
from torch._dynamo.utils import compile_times
print(compile_times(repr="str", aggregate=True))
