"""Probe: what run_samples costs on a fresh process (Triton JIT of the fused kernels at decode shapes?) and after."""
import time, torch
from tinylab.model import build_model
from tinylab.presets import get_preset

class ByteTokenizer:
    vocab_size, bos_id = 257, 256
    def encode(self, text, prepend_bos=False):
        return ([self.bos_id] if prepend_bos else []) + list(text.encode("utf-8"))
    def id_to_bytes(self, token_id):
        return b"<|bos|>" if token_id == self.bos_id else bytes([token_id % 256])
from tinylab.train import run_samples
torch.manual_seed(0)
m = build_model(get_preset("ittybitty").model, "cuda")
tok = ByteTokenizer()
for rep in range(3):
    t = time.perf_counter(); run_samples(m, tok); torch.cuda.synchronize(); print("run_samples", rep, round(time.perf_counter() - t, 3), "s", flush=True)
torch.manual_seed(0)
m2 = build_model(get_preset("ittybitty").model, "cuda", rope_norm="torch", relu2="torch")
t = time.perf_counter(); run_samples(m2, tok); torch.cuda.synchronize(); print("run_samples torch ops, new model", round(time.perf_counter() - t, 3), "s", flush=True)
