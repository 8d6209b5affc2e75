"""The strides of dy reaching the rope + QK-norm backward in ittybitty's real step, and its kernel time with them."""
import torch
from tinylab import kernels as K
from tinylab.model import GPT
from tinylab.presets import get_preset
seen = []
orig = K.rope_rms_norm_backward
def spy(x, dy, cos, sin):
    seen.append((tuple(x.shape), x.stride(), dy.stride(), dy.is_contiguous()))
    return orig(x, dy, cos, sin)
K.rope_rms_norm_backward = spy
cfg = get_preset("ittybitty").model
m = GPT(cfg).cuda()
idx = torch.randint(0, cfg.vocab_size, (48, 2048), device="cuda")
with torch.autocast("cuda", torch.bfloat16):
    loss = m(idx, idx)
loss.backward()
for s in seen[:2]: print("x shape/stride, dy stride, contiguous:", s)
shape, xs, dys, _ = seen[0]
x = torch.empty_strided(shape, xs, device="cuda", dtype=torch.bfloat16).normal_()
dy = torch.empty_strided(shape, dys, device="cuda", dtype=torch.bfloat16).normal_()
T = shape[1]; cos = m.cos[:, :T].contiguous(); sin = m.sin[:, :T].contiguous()
print("cos", m.cos.dtype, tuple(cos.shape))
def t(fn, n=30):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n * 1e3
print(f"bwd with the step's strides {t(lambda: orig(x, dy, cos, sin)):.0f} us; dy contiguous {t(lambda: orig(x, dy.contiguous(), cos, sin)):.0f} us (incl. its copy); "
      f"x, dy contiguous {t(lambda: orig(x.contiguous(), dy.contiguous(), cos, sin)):.0f} us (incl. copies)")
dyc, xc = dy.contiguous(), x.contiguous()
print(f"pre-made contiguous: {t(lambda: orig(xc, dyc, cos, sin)):.0f} us; fwd {t(lambda: K.rope_rms_norm(x, cos, sin)):.0f} us")
