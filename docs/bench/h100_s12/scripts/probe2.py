"""Session 12 probe 2. Part "lm": one micro-batch's lm_head + soft-capped CE (98,304 × 512 → 24,576): tinylab's op
today against the scaled-exp pipeline (qlce), errors against fp32; quack's own scaled-exp CE (no softcap) for scale;
qlce's parts on one chunk. Part "step": the training step, alternating in one process."""
import json, os, sys, time, traceback
import torch
from triton.testing import do_bench

OUT = sys.argv[1]
PARTS = sys.argv[2].split(",") if len(sys.argv) > 2 else ["lm", "step"]


def log(rec):
    print(json.dumps(rec), flush=True)
    with open(os.path.join(OUT, "probe2.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")


t = time.perf_counter()
import qmlp  # noqa: E402
import qlce  # noqa: E402
from quack.gemm_config import GemmConfig  # noqa: E402
log(dict(what="imports", s=time.perf_counter() - t))
qmlp.CONFIG[1] = GemmConfig(tile_m=128, tile_n=128, pingpong=True, cluster_m=1, cluster_n=2,
                            is_dynamic_persistent=False, device_capacity=9)
qmlp.CONFIG[2] = GemmConfig(tile_m=128, tile_n=160, pingpong=True, cluster_m=2, cluster_n=1,
                            is_dynamic_persistent=False, device_capacity=9)
import tinylab.loss as L  # noqa: E402
from tinylab.bench.lm_head import reference  # noqa: E402


def ms(fn):
    return do_bench(fn, warmup=3, rep=300)


def rel(x, ref):
    return ((x.float() - ref.float()).norm() / ref.float().norm()).item()


def lm_part():
    g = torch.Generator(device="cuda").manual_seed(0)
    N, d, V, chunk = 98304, 512, 24576, 8192
    x = torch.randn(N, d, device="cuda", generator=g).bfloat16()
    targets = torch.randint(0, V, (N,), device="cuda", generator=g)
    targets[::97] = -1
    n = (targets >= 0).sum()
    for wscale in (0.05, 0.5):
        w = (torch.randn(V, d, device="cuda", generator=g) * wscale).bfloat16()
        ref_loss, ref_gx, ref_gw = reference(x, w, targets, chunk)
        for name in ("today", "qlce"):
            qlce.install() if name == "qlce" else qlce.uninstall()
            try:
                t = time.perf_counter()
                loss, gx, gw = L._loss_and_grads(x, w, targets, 15.0, chunk, "auto", torch.bfloat16)
                torch.cuda.synchronize()
                first = time.perf_counter() - t
                rec = dict(what="lm_head micro-batch", impl=name, wscale=wscale, first_s=first,
                           loss=(loss / n).item(), ref_loss=ref_loss.item(), loss_rel=abs((loss / n).item() / ref_loss.item() - 1),
                           gx_rel=rel(gx / n, ref_gx), gw_rel=rel(gw / n, ref_gw))
                rec["ms"] = ms(lambda: L._loss_and_grads(x, w, targets, 15.0, chunk, "auto", torch.bfloat16))
                log(rec)
            except Exception:
                log(dict(what="lm_head FAILED", impl=name, tb=traceback.format_exc()[-3000:]))
    qlce.uninstall()
    try:
        from quack.linear_cross_entropy import scaled_exp_linear_cross_entropy_fwd
        fn = lambda: scaled_exp_linear_cross_entropy_fwd(x, w, targets, chunk, ignore_index=-1)  # noqa: E731
        fn()
        log(dict(what="quack scaled-exp CE (no softcap), micro-batch", ms=ms(fn)))
    except Exception:
        log(dict(what="quack scaled-exp FAILED", tb=traceback.format_exc()[-2000:]))
    try:  # one chunk's parts
        w = (torch.randn(V, d, device="cuda", generator=g) * 0.05).bfloat16()
        step = qlce.Chunks(x, w, "auto", torch.bfloat16)
        gx = torch.empty_like(x)
        gw = torch.zeros(V, d, device="cuda")
        tc = targets[:chunk]
        step(0, chunk, tc, 15.0, gx, gw)
        b = step._scratch(chunk)
        xc = x[:chunk]
        T = V // qlce.TILE_N1
        parts = dict(
            gemm1=lambda: qlce.softcap_exp_epi.gemm(xc, step.w, b["E"], epi_args=dict(
                max_log2=qlce.TILE_N1, sum_exp=b["sum_exp"], max_log2_out=b["kk"], target=tc, target_logit=b["zy"]),
                tile_N=qlce.TILE_N1, **qlce.CFG["g1"]),
            chunk_total=lambda: step(0, chunk, tc, 15.0, gx, gw),
            cublas_logits=lambda: xc @ step.w.t(),
            cublas_dx=lambda: b["E"] @ step.w,
            cublas_dw=lambda: torch.addmm(gw, b["E"].t(), xc, out_dtype=torch.float32, out=gw))
        log(dict(what="qlce parts, one chunk, us", **{k: 1e3 * ms(f) for k, f in parts.items()}))
        for tn in (128, 160, 192, 208):
            for pp in (True, False):
                qlce.TILE_N1 = tn if 24576 % tn == 0 and tn % 64 == 0 else 192
                if qlce.TILE_N1 != tn:
                    continue
                qlce.CFG["g1"] = dict(tile_M=128, cluster_M=2, cluster_N=1, pingpong=pp)
                step = qlce.Chunks(x, w, "auto", torch.bfloat16)
                try:
                    step(0, chunk, tc, 15.0, gx, gw)
                    log(dict(what="qlce chunk, gemm1 config", tile_n=tn, pingpong=pp,
                             chunk_us=1e3 * ms(lambda: step(0, chunk, tc, 15.0, gx, gw))))
                except Exception:
                    log(dict(what="qlce config FAILED", tile_n=tn, pingpong=pp, tb=traceback.format_exc()[-800:]))
        qlce.TILE_N1, qlce.CFG["g1"] = 192, dict(tile_M=128, cluster_M=2, cluster_N=1, pingpong=True)
    except Exception:
        log(dict(what="qlce parts FAILED", tb=traceback.format_exc()[-3000:]))


def step_part():
    from tinylab.bench.gpu import TrainStep, time_steps
    cases = [("sdpa", "triton", "today", "regions"), ("sdpa", "triton", "qlce", "regions"),
             ("fa4", "quack", "qlce", "regions"), ("sdpa", "triton", "today", "model"),
             ("fa4", "quack", "qlce", "model"), ("sdpa", "triton", "today", "regions"),
             ("sdpa", "triton", "qlce", "regions"), ("fa4", "quack", "qlce", "model"), ("fa4", "quack", "today", "model")]
    for attn, mlp, lm, scope in cases:
        try:
            torch._dynamo.reset()
            torch.manual_seed(0)
            qmlp.set_attention(attn)
            qmlp.install_quack_mlp() if mlp == "quack" else qmlp.uninstall_quack_mlp()
            qlce.install() if lm == "qlce" else qlce.uninstall()
            t = time.perf_counter()
            step = TrainStep("ittybitty", 48, scope=scope)
            losses = [step().item() for _ in range(5)]
            warm = time.perf_counter() - t
            times = sorted(time_steps(step, 2, 30))
            log(dict(what="step", attn=attn, mlp=mlp, lm=lm, scope=scope, warm_s=warm, step_ms=times[15] * 1e3,
                     step_ms_min=times[0] * 1e3, tok_per_s=491520 / times[15], losses=losses,
                     peak_mib=torch.cuda.max_memory_allocated() / 2 ** 20))
            del step
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        except Exception:
            log(dict(what="step FAILED", attn=attn, mlp=mlp, lm=lm, scope=scope, tb=traceback.format_exc()[-3000:]))


if "lm" in PARTS:
    lm_part()
if "step" in PARTS:
    step_part()
print("== end", time.strftime("%T"), flush=True)
