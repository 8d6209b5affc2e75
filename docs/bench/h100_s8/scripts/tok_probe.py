"""Session 8: the data child's two phases on the device, knob by knob.
tok BUF: rustbpe's training on the carried FineWeb's train split (texts read first, timed apart), buffer_size BUF,
  threads from RAYON_NUM_THREADS; wall and CPU seconds.
pre N: pre-tokenization of the train split with N encoding threads (a tokenizer trained once, in $TINYLAB_HOME)."""
import resource, sys, time
from tinylab import tokenizer as T, tokens as K
from tinylab.data import iter_texts
from tinylab.presets import resolve


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime


mode, n = sys.argv[1], int(sys.argv[2])
if mode == "tok":
    import rustbpe
    t = time.time(); texts = list(iter_texts("fineweb", "train")); read = time.time() - t
    t, c = time.time(), cpu()
    b = rustbpe.Tokenizer(); b.train_from_iterator(iter(texts), 24575, buffer_size=n, pattern=T.SPLIT_PATTERN)
    print(f"tok buffer {n}: read {read:.2f} s; train wall {time.time() - t:.2f} s, cpu {cpu() - c:.1f} s", flush=True)
else:
    cfg = resolve("ittybitty")
    tok = T.get_tokenizer(cfg, progress=False)
    orig = T.Tokenizer.encode_concat
    T.Tokenizer.encode_concat = lambda self, texts, num_threads=None: orig(self, texts, n)
    import shutil; shutil.rmtree(K.token_dir(cfg.data.corpus, tok), ignore_errors=True)
    t, c = time.time(), cpu()
    K.pretokenize(cfg.data.corpus, tok, "train", progress=False)
    print(f"pretokenize with {n} threads: wall {time.time() - t:.2f} s, cpu {cpu() - c:.1f} s", flush=True)
