import torch, torch.nn.functional as F
from tinylab.presets import get_preset
from tinylab.model import build_model
torch.manual_seed(0)
c = get_preset("ittybitty").model
m = build_model(c, "cpu", loss="plain")
idx = torch.randint(0, c.vocab_size, (1, 2049))
feats = {}
h = m.lm_head.register_forward_hook(lambda mod, inp, out: feats.__setitem__("x", inp[0].detach()))
with torch.no_grad():
    m(idx[:, :-1])
h.remove()
x = feats["x"][0].bfloat16()            # (2048, 512) as autocast hands it
W = m.lm_head.weight.detach().bfloat16()
y = idx[0, 1:]
C = 15.0
def ref_grads():
    xd, Wd = x.double().requires_grad_(), W.double().requires_grad_()
    l = xd @ Wd.t(); z = C * torch.tanh(l / C)
    F.cross_entropy(z, y, reduction="sum").backward()
    return xd.grad, Wd.grad
gx0, gW0 = ref_grads()
rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()
# plain-like / Triton: bf16 logits, fp32 softmax, bf16 dlogits
lb = (x.float() @ W.float().t()).bfloat16().float()
t = torch.tanh(lb / C); z = C * t
p = torch.softmax(z, -1); oh = F.one_hot(y, c.vocab_size).float()
dZ = ((p - oh) * (1 - t * t)).bfloat16()
gx_t = (dZ.float() @ W.float()).bfloat16(); gW_t = dZ.float().t() @ x.float()
print("triton-like: dx", rel(gx_t, gx0), "dW", rel(gW_t, gW0))
# scaled-exp: fp32 accumulators
acc = x.float() @ W.float().t()
t = torch.tanh(acc / C); e = torch.exp(C * t - C)
E = (e * (1 - t * t)).bfloat16().float()
S = e.sum(-1)
zy = C * t.gather(1, y[:, None])[:, 0]; ty = t.gather(1, y[:, None])[:, 0]
fix = ((torch.exp(zy - C) - S) * (1 - ty * ty)).bfloat16().float()
E[torch.arange(len(y)), y] = fix
v = 1 / S
gx_s = ((E @ W.float()).bfloat16().float() * v[:, None]).bfloat16()
xs = (v.bfloat16().float()[:, None] * x.float()).bfloat16().float()
gW_s = E.t() @ xs
print("scaled-exp : dx", rel(gx_s, gx0), "dW", rel(gW_s, gW0))
print("S range", S.min().item(), S.max().item(), "v", v.min().item(), v.max().item(), "logit std", acc.std().item())
print("scaled vs triton: dx", rel(gx_s, gx_t.double()), "dW", rel(gW_s, gW_t.double()))
