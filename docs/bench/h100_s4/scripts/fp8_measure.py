"""Each run's final weights, the same 24 training batches (16 x 2048 tokens each): the mean loss by the bf16
lm_head, and what the FP8 one adds on the same weights."""
import sys, torch
from tinylab.checkpoint import load_model
from tinylab.loader import TokenLoader, token_dir
print(f"{'run':16s} {'bf16 loss':>10s} {'fp8 - bf16':>11s}")
for r in sys.argv[1:]:
    model, tok, meta = load_model(r, device="cuda")
    loader = TokenLoader(token_dir("fineweb", tok), "train", 16, 2048, device="cuda")
    batches = [next(loader) for _ in range(24)]
    res = {}
    for impl in ("chunked", "chunked-fp8"):
        model.loss_impl = impl
        tot = 0.0
        for x, y in batches:
            with torch.autocast("cuda", torch.bfloat16):
                tot += model(x, y).item()
            model.zero_grad(set_to_none=True)
        res[impl] = tot / len(batches)
    print(f"{r:16s} {res['chunked']:10.5f} {res['chunked-fp8'] - res['chunked']:+11.5f}", flush=True)
