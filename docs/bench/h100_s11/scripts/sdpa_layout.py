"""Session 11: does cuDNN's attention (SDPA) care about the layout of q, k, v and of the gradient it is handed?
ittybitty's shape (48 x 2048, 8 heads x 64, causal, bf16), forward + backward, alternating, one process.

Today the model hands SDPA (B, H, T, D) views of (B, T, H, D) tensors and gets dy as a view of a (B, T, C) one.
Prediction: 0 to -0.05 ms a layer, 0 to -1 ms a step (cuDNN's pre/post kernels, dot(dO, O) and the dq
conversion, are 5.3 ms a step; a layout it prefers could shorten them).
"""
import statistics
import sys

import torch
import torch.nn.functional as F

B, T, H, D = 48, 2048, 8, 64


def make(layout):
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (B, T, H, D) if layout == "bthd" else (B, H, T, D)
    qkv = [torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_() for _ in range(3)]
    return qkv


def make_dy(dy_layout):
    if dy_layout == "bthd":
        return torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    return torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)


def step(qkv, layout):
    q, k, v = (t.transpose(1, 2) if layout == "bthd" else t for t in qkv)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def main(out):
    cases = [("bthd", "bthd"), ("bhtd", "bhtd"), ("bthd", "bhtd"), ("bhtd", "bthd")]
    tensors = {c: make(c[0]) for c in cases}
    dys = {c: make_dy(c[1]) for c in cases}
    print("output strides:", {c: step(tensors[c], c[0]).stride() for c in cases})
    times = {c: [] for c in cases}
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    for rep in range(30):
        for c in cases:
            qkv = tensors[c]
            for t in qkv:
                t.grad = None
            torch.cuda.synchronize()
            ev[0].record()
            step(qkv, c[0]).backward(dys[c])
            ev[1].record()
            torch.cuda.synchronize()
            if rep >= 3:
                times[c].append(ev[0].elapsed_time(ev[1]))
    with open(f"{out}/sdpa_layout.txt", "w") as f:
        for c in cases:
            line = f"q,k,v {c[0]}  dy {c[1]}: fwd+bwd {statistics.median(times[c]):.3f} ms (min {min(times[c]):.3f})"
            print(line)
            f.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
