"""Session 8: the data child's work alone on the device (cold TINYLAB_HOME with the carried FineWeb shards): the
tokenizer's training (rustbpe) and the pre-tokenization, wall and CPU time each."""
import resource, sys, time
t0 = time.time()
from tinylab.presets import resolve
from tinylab import tokenizer as T, tokens as K

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime

cfg = resolve("ittybitty")
print(f"imports {time.time() - t0:.2f} s", flush=True)
t, c = time.time(), cpu()
tok = T.get_tokenizer(cfg, progress=False)
print(f"tokenizer: wall {time.time() - t:.2f} s, cpu {cpu() - c:.1f} s, {tok.stats}", flush=True)
for split in ("train", "val"):
    t, c = time.time(), cpu()
    K.pretokenize(cfg.data.corpus, tok, split, progress=False)
    print(f"pretokenize {split}: wall {time.time() - t:.2f} s, cpu {cpu() - c:.1f} s", flush=True)
print(f"total {time.time() - t0:.2f} s")
