"""Session 12 probe. Part 1: the MLP's two epilogue GEMMs at ittybitty's shape (98,304 × 512 → 2,048 and back):
tinylab's Triton TMA kernel, cuBLAS without the epilogue, quack's CuTe DSL kernels (autotuned, then each config of a
short list). Part 2: the training step, alternating in one process: SDPA/FA4 × Triton/quack MLP, regions/model."""
import json, os, sys, time, traceback
import torch
from triton.testing import do_bench

OUT = sys.argv[1]
PARTS = sys.argv[2].split(",") if len(sys.argv) > 2 else ["mlp", "step"]


def log(rec):
    print(json.dumps(rec), flush=True)
    with open(os.path.join(OUT, "probe.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")


t = time.perf_counter()
import qmlp  # noqa: E402  (cutlass, quack, flash_attn.cute)
log(dict(what="import qmlp (cutlass + quack + flash_attn.cute)", s=time.perf_counter() - t))
from quack.gemm_config import GemmConfig  # noqa: E402
import tinylab.kernels as K  # noqa: E402


def us(fn):
    return do_bench(fn, warmup=25, rep=200) * 1e3


def rel(x, ref):
    return ((x.float() - ref.float()).norm() / ref.float().norm()).item()


def mlp_part():
    g = torch.Generator(device="cuda").manual_seed(0)
    M, d, h = 48 * 2048, 512, 2048
    x = torch.randn(M, d, device="cuda", dtype=torch.bfloat16, generator=g)
    dy = torch.randn(M, d, device="cuda", dtype=torch.bfloat16, generator=g) * 0.1
    w_fc = (torch.randn(h, d, device="cuda", generator=g) / d ** 0.5).bfloat16()
    w_proj = (torch.randn(d, h, device="cuda", generator=g) / h ** 0.5).bfloat16()
    ref_a = torch.relu(x.float() @ w_fc.float().t()).square()
    a = K._mm_epilogue(x, w_fc.t(), None, epi=1)
    ref_dh = (dy.float() @ w_proj.float()) * 2 * a.float().sqrt()
    dh = K._mm_epilogue(dy, w_proj, a, epi=2)
    log(dict(what="triton tma", fwd_us=us(lambda: K._mm_epilogue(x, w_fc.t(), None, epi=1)),
             bwd_us=us(lambda: K._mm_epilogue(dy, w_proj, a, epi=2)), fwd_err=rel(a, ref_a), bwd_err=rel(dh, ref_dh)))
    log(dict(what="cublas, no epilogue", fwd_us=us(lambda: x @ w_fc.t()), bwd_us=us(lambda: dy @ w_proj),
             relu2_pointwise_fwd_us=us(lambda: torch.relu(ref_a).square())))
    for epi in (1, 2):
        qmlp.CONFIG[epi] = None
    os.environ["QUACK_PRINT_AUTOTUNING"] = "1"
    for epi, name in ((1, "fwd"), (2, "bwd")):
        try:
            t = time.perf_counter()
            out = qmlp.mm_epilogue_quack(x, w_fc.t(), None, 1) if epi == 1 else qmlp.mm_epilogue_quack(dy, w_proj, a, 2)
            torch.cuda.synchronize()
            first = time.perf_counter() - t
            fn = (lambda: qmlp.mm_epilogue_quack(x, w_fc.t(), None, 1)) if epi == 1 else \
                (lambda: qmlp.mm_epilogue_quack(dy, w_proj, a, 2))
            log(dict(what=f"quack tuned {name}", first_call_s=first, us=us(fn),
                     err=rel(out, ref_a if epi == 1 else ref_dh)))
        except Exception:
            log(dict(what=f"quack tuned {name} FAILED", tb=traceback.format_exc()[-3000:]))
    os.environ.pop("QUACK_PRINT_AUTOTUNING", None)
    configs = [GemmConfig(tile_m=tm, tile_n=tn, pingpong=pp, cluster_m=cm, cluster_n=cn, is_dynamic_persistent=False,
                          device_capacity=9)
               for tm, tn, pp in [(128, 128, True), (128, 160, True), (128, 192, True), (128, 208, True),
                                  (128, 256, False), (256, 128, False), (256, 192, False)]
               for cm, cn in [(2, 1), (1, 2)]]
    for cfg in configs:
        for epi, name in ((1, "fwd"), (2, "bwd")):
            qmlp.CONFIG[epi] = cfg
            try:
                t = time.perf_counter()
                out = qmlp.mm_epilogue_quack(x, w_fc.t(), None, 1) if epi == 1 else qmlp.mm_epilogue_quack(dy, w_proj, a, 2)
                torch.cuda.synchronize()
                first = time.perf_counter() - t
                fn = (lambda: qmlp.mm_epilogue_quack(x, w_fc.t(), None, 1)) if epi == 1 else \
                    (lambda: qmlp.mm_epilogue_quack(dy, w_proj, a, 2))
                t_us = us(fn)
                log(dict(what=f"quack {name}", cfg=[cfg.tile_m, cfg.tile_n, cfg.pingpong, cfg.cluster_m, cfg.cluster_n],
                         compile_s=first, us=t_us, err=rel(out, ref_a if epi == 1 else ref_dh)))
                if t_us < BEST.get(epi, (1e9, None))[0]:
                    BEST[epi] = (t_us, cfg)
            except Exception:
                log(dict(what=f"quack {name} FAILED", cfg=str(cfg), tb=traceback.format_exc()[-1500:]))
    for epi in (1, 2):
        qmlp.CONFIG[epi] = BEST.get(epi, (None, None))[1]
    log(dict(what="configs for the step", fwd=str(qmlp.CONFIG[1]), bwd=str(qmlp.CONFIG[2])))


BEST = {}


def step_part():
    from tinylab.bench.gpu import TrainStep, time_steps
    cases = [("sdpa", "triton", "regions"), ("fa4", "triton", "regions"), ("sdpa", "quack", "regions"),
             ("fa4", "quack", "regions"), ("sdpa", "triton", "regions"), ("fa4", "quack", "regions"),
             ("sdpa", "triton", "model"), ("fa4", "quack", "model")]
    for attn, mlp, scope in cases:
        try:
            torch._dynamo.reset()
            torch.manual_seed(0)
            qmlp.set_attention(attn)
            qmlp.install_quack_mlp() if mlp == "quack" else qmlp.uninstall_quack_mlp()
            t = time.perf_counter()
            step = TrainStep("ittybitty", 48, scope=scope)
            losses = [step().item() for _ in range(5)]
            warm = time.perf_counter() - t
            times = sorted(time_steps(step, 2, 30))
            log(dict(what="step", attn=attn, mlp=mlp, scope=scope, warm_s=warm, step_ms=times[15] * 1e3,
                     step_ms_min=times[0] * 1e3, tok_per_s=491520 / times[15], losses=losses,
                     peak_mib=torch.cuda.max_memory_allocated() / 2 ** 20))
            del step
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        except Exception:
            log(dict(what="step FAILED", attn=attn, mlp=mlp, scope=scope, tb=traceback.format_exc()[-3000:]))


if "mlp" in PARTS:
    mlp_part()
if "step" in PARTS:
    step_part()
print("== end", time.strftime("%T"), flush=True)
