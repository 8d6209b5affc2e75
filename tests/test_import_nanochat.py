"""Import of nanochat base checkpoints: nanochat's logits and token ids, and nothing in a pickle ever runs.

The fixture is written here in nanochat's own layout and key names (October 2025):
<base>/base_checkpoints/d2/{model,meta,optim}_000120.*, <base>/tokenizer/{tokenizer.pkl, token_bytes.pt}.
The reference forward below is nanochat/gpt.py's math written out over the state dict.
"""
import json
import os
import pickle
import shutil

import pytest
import tiktoken
import tiktoken.load
import torch
import torch.nn.functional as F

from tinylab import import_nanochat as imp
from tinylab.checkpoint import load_model
from tinylab.errors import TinylabError, cli
from tinylab.tiktoken_pickle import UnsafePickleError, load_encoding_state
from tinylab.tokenizer import SPLIT_PATTERN

SPECIALS = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
            "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]  # nanochat/tokenizer.py
STEP = 120
TEXT = "Hello 👋🏽 world! 日本語, café = cafe\u0301, 12345 6.78\n\n  x<|bos|>y <|user_start|> don't"


def nanochat_logits(sd, mc, idx, table_dtype=torch.bfloat16):
    """nanochat/gpt.py (October 2025) in fp32; its rotary tables are bf16 (`cos.bfloat16()`)."""
    B, T = idx.shape
    H, Hkv, d = mc["n_head"], mc["n_kv_head"], mc["n_embd"]
    hd = d // H
    norm = lambda x: F.rms_norm(x, (x.size(-1),))  # noqa: E731
    W = lambda name: sd[name].float()  # noqa: E731
    freqs = torch.outer(torch.arange(T, dtype=torch.float32),
                        1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)))
    cos, sin = (f.to(table_dtype)[None, :, None, :] for f in (freqs.cos(), freqs.sin()))

    def rotary(x):
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3).to(x.dtype)

    x = norm(F.embedding(idx, W("transformer.wte.weight")))
    for i in range(mc["n_layer"]):
        p = f"transformer.h.{i}."
        h = norm(x)
        q = (h @ W(p + "attn.c_q.weight").T).view(B, T, H, hd)
        k = (h @ W(p + "attn.c_k.weight").T).view(B, T, Hkv, hd)
        v = (h @ W(p + "attn.c_v.weight").T).view(B, T, Hkv, hd)
        q, k = norm(rotary(q)), norm(rotary(k))
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True, enable_gqa=H != Hkv)
        x = x + y.transpose(1, 2).reshape(B, T, d) @ W(p + "attn.c_proj.weight").T
        x = x + F.relu(norm(x) @ W(p + "mlp.c_fc.weight").T).square() @ W(p + "mlp.c_proj.weight").T
    logits = norm(x) @ W("lm_head.weight").T
    return 15 * torch.tanh(logits / 15)


def nanochat_state_dict(mc, seed=0):
    """Random weights under nanochat's names as torch.compile saves them; wte in bf16 as on CUDA."""
    g = torch.Generator().manual_seed(seed)
    d, hd, V = mc["n_embd"], mc["n_embd"] // mc["n_head"], mc["vocab_size"]
    shapes = {"transformer.wte.weight": (V, d), "lm_head.weight": (V, d)}
    for i in range(mc["n_layer"]):
        p = f"transformer.h.{i}."
        shapes.update({p + "attn.c_q.weight": (mc["n_head"] * hd, d), p + "attn.c_k.weight": (mc["n_kv_head"] * hd, d),
                       p + "attn.c_v.weight": (mc["n_kv_head"] * hd, d), p + "attn.c_proj.weight": (d, d),
                       p + "mlp.c_fc.weight": (4 * d, d), p + "mlp.c_proj.weight": (d, 4 * d)})
    sd = {"_orig_mod." + k: torch.randn(s, generator=g) * (1.0 if "wte" in k else s[1] ** -0.5)
          for k, s in shapes.items()}
    sd["_orig_mod.transformer.wte.weight"] = sd["_orig_mod.transformer.wte.weight"].bfloat16()
    return sd


@pytest.fixture(scope="module")
def ranks():
    from tinylab.data import iter_texts
    from tinylab.tokenizer import train_tokenizer
    return train_tokenizer(iter_texts("sample", "val", max_chars=100_000), 300, progress=False).ranks


@pytest.fixture
def nanochat(tmp_path, ranks):
    """A nanochat base dir; returns (checkpoint dir, model_config, state dict, tiktoken Encoding)."""
    mc = dict(sequence_len=64, vocab_size=len(ranks) + len(SPECIALS), n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
    ckpt, tok_dir = tmp_path / "base_checkpoints" / "d2", tmp_path / "tokenizer"
    ckpt.mkdir(parents=True)
    tok_dir.mkdir()
    sd = nanochat_state_dict(mc)
    torch.save(sd, ckpt / f"model_{STEP:06d}.pt")
    (ckpt / f"optim_{STEP:06d}.pt").write_bytes(b"never read")
    meta = dict(step=STEP, val_bpb=1.234, model_config=mc, device_batch_size=4, max_seq_len=64,
                user_config=dict(depth=2, total_batch_size=2048))
    (ckpt / f"meta_{STEP:06d}.json").write_text(json.dumps(meta))
    enc = tiktoken.Encoding(name="rustbpe", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                            special_tokens={s: len(ranks) + i for i, s in enumerate(SPECIALS)})
    (tok_dir / "tokenizer.pkl").write_bytes(pickle.dumps(enc))
    torch.save(torch.zeros(mc["vocab_size"], dtype=torch.int32), tok_dir / "token_bytes.pt")
    return ckpt, mc, {k.removeprefix("_orig_mod."): v for k, v in sd.items()}, enc


def test_imported_run_gives_nanochat_logits(nanochat, capsys):
    ckpt, mc, sd, _ = nanochat
    assert cli(imp.main, [str(ckpt), "--run", "nc"]) == 0
    assert "imported nanochat step 120" in capsys.readouterr().out
    model, _, meta = load_model("nc")
    assert meta["step"] == STEP and meta["val_bpb"] == 1.234 and model.config.n_kv_head == 2
    idx = torch.randint(mc["vocab_size"], (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(idx)
    assert (ours - nanochat_logits(sd, mc, idx, torch.float32)).abs().max() < 1e-5  # the same math
    # the one difference: nanochat rounds its rotary tables to bf16 (8 bits of mantissa); measured 3.3e-3
    assert (ours - nanochat_logits(sd, mc, idx, torch.bfloat16)).abs().max() < 0.02


def test_an_imported_run_is_not_resumed(nanochat):
    from tinylab.train import TrainError, train

    assert cli(imp.main, [str(nanochat[0]), "--run", "nc-resume"]) == 0
    with pytest.raises(TrainError, match="imported from nanochat without its optimizer state.*not resumed"):
        train("smoke", "nc-resume", resume=True, num_iterations=200, progress=False)
    assert load_model("nc-resume")[2]["step"] == STEP  # the import is left as it was


def test_imported_tokenizer_keeps_nanochat_ids(nanochat):
    ckpt, mc, _, enc = nanochat
    config, _, tok, meta = imp.convert(ckpt)
    assert meta["step"] == STEP and tok.vocab_size == enc.n_vocab == mc["vocab_size"] == config.vocab_size
    assert tok.special_tokens == {s: enc.encode_single_token(s) for s in SPECIALS}
    assert tok.encode(TEXT) == enc.encode_ordinary(TEXT)  # special-token text stays text on both sides
    assert tok.encode(TEXT, prepend_bos=True)[0] == enc.encode_single_token("<|bos|>")
    assert tok.decode(enc.encode(TEXT, allowed_special="all")) == TEXT


def test_imported_run_exports_to_transformers(nanochat, tmp_path):
    from transformers import AutoModelForCausalLM

    from tinylab import export
    ckpt, mc, sd, _ = nanochat
    imp.write_run("nc-hf", *imp.convert(ckpt))
    export.export("nc-hf", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    idx = torch.randint(mc["vocab_size"], (1, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (hf(idx).logits - nanochat_logits(sd, mc, idx, torch.float32)).abs().max() < 1e-4


class Payload:
    """Unpickling this calls func(arg): what a hostile tokenizer.pkl would do."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def payloads(marker):
    import builtins
    return {"os.system": Payload(os.system, f"touch {marker}"),
            "builtins.exec": Payload(builtins.exec, f"open({str(marker)!r}, 'w').write('pwned')"),
            "tiktoken.load": Payload(tiktoken.load.load_tiktoken_bpe, str(marker)),  # tiktoken, but not Encoding
            "nested": {"name": "x", "pat_str": "x", "mergeable_ranks": Payload(os.system, f"touch {marker}"),
                       "special_tokens": {}}}


def test_the_payloads_are_live(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(payloads(marker)["os.system"]))  # plain pickle runs it ...
    assert marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "tiktoken.load", "nested"])
def test_a_malicious_tokenizer_pickle_is_refused_and_runs_nothing(nanochat, tmp_path, kind):
    ckpt = nanochat[0]
    marker = tmp_path / "ran"
    (ckpt.parent.parent / "tokenizer" / "tokenizer.pkl").write_bytes(pickle.dumps(payloads(marker)[kind]))
    with pytest.raises(UnsafePickleError, match="refusing") as e:  # ... ours refuses before importing it
        imp.convert(ckpt)
    assert isinstance(e.value, TinylabError) and not marker.exists()
    assert cli(imp.main, [str(ckpt), "--run", "evil"]) == 2 and not marker.exists()


def test_pickles_that_are_not_an_encoding_are_refused(tmp_path):
    bad = tmp_path / "tokenizer.pkl"
    for blob, message in [(pickle.dumps({"a": 1}), "holds a dict"), (b"\x80\x04garbage", "not a readable pickle"),
                          (pickle.dumps(tiktoken.Encoding("e", pat_str="x", mergeable_ranks={b"a": 0},
                                                          special_tokens={}))[:-9], "not a readable pickle")]:
        bad.write_bytes(blob)
        with pytest.raises(UnsafePickleError, match=message):
            load_encoding_state(bad)


def test_weights_only_refuses_code_in_model_pt(nanochat, tmp_path):
    ckpt = nanochat[0]
    marker = tmp_path / "ran"
    torch.save({"transformer.wte.weight": Payload(os.system, f"touch {marker}")}, ckpt / f"model_{STEP:06d}.pt")
    with pytest.raises(imp.NanochatImportError, match="weights-only"):
        imp.convert(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("change,named", [
    (lambda sd, meta: sd.update({"value_embeds.1.weight": torch.zeros(1)}), "value embeddings"),
    (lambda sd, meta: sd.update({"resid_lambdas": torch.ones(2)}), "per-layer residual scalars"),
    (lambda sd, meta: sd.update({"transformer.h.0.attn.rotary.weight": torch.ones(2)}), "transformer.h.0.attn.rotary"),
    (lambda sd, meta: meta["model_config"].update(window_pattern="SSSL"), "sliding-window"),
    (lambda sd, meta: sd.update({"transformer.wte.weight": torch.zeros(320, 64)}), "padded vocabulary"),
])
def test_later_nanochat_is_refused_by_name(nanochat, change, named):
    ckpt = nanochat[0]
    sd = torch.load(ckpt / f"model_{STEP:06d}.pt", weights_only=True)
    meta = json.loads((ckpt / f"meta_{STEP:06d}.json").read_text())
    change(sd, meta)
    torch.save(sd, ckpt / f"model_{STEP:06d}.pt")
    (ckpt / f"meta_{STEP:06d}.json").write_text(json.dumps(meta))
    with pytest.raises(imp.NanochatImportError, match=named):
        imp.convert(ckpt)


def nan_in_wte(sd):
    next(v for k, v in sd.items() if k.endswith("transformer.wte.weight"))[3, 5] = float("nan")


def write_pat_str(ckpt, pat_str):
    """tokenizer.pkl as nanochat would pickle an Encoding of `pat_str` (built without tiktoken's check of it)."""
    pkl = ckpt.parent.parent / "tokenizer" / "tokenizer.pkl"
    good, enc = pickle.loads(pkl.read_bytes()), tiktoken.Encoding.__new__(tiktoken.Encoding)
    enc.name, enc._pat_str, enc._mergeable_ranks, enc._special_tokens = (
        "rustbpe", pat_str, good._mergeable_ranks, good._special_tokens)
    pkl.write_bytes(pickle.dumps(enc))


@pytest.mark.parametrize("change,named", [
    (lambda ckpt: torch.save([torch.zeros(2)], ckpt / f"model_{STEP:06d}.pt"), "holds a list, not nanochat's dict"),
    (lambda ckpt: (ckpt / f"meta_{STEP:06d}.json").write_text(json.dumps(dict(model_config=[1, 2]))),
     "model_config is a list"),
    (lambda ckpt: write_pat_str(ckpt, "(" * 300 + "a" + ")" * 300), "not a pattern tiktoken can use"),
])
def test_damaged_nanochat_files_are_named_not_a_traceback(nanochat, change, named):
    change(nanochat[0])
    with pytest.raises(imp.NanochatImportError, match=named):
        imp.convert(nanochat[0])


def test_nan_weights_are_refused_and_user_config_need_not_be_an_object(nanochat, tmp_path, monkeypatch):
    ckpt = nanochat[0]
    sd = torch.load(ckpt / f"model_{STEP:06d}.pt", weights_only=True)
    meta = json.loads((ckpt / f"meta_{STEP:06d}.json").read_text())
    meta["user_config"] = ["not", "an", "object"]
    (ckpt / f"meta_{STEP:06d}.json").write_text(json.dumps(meta))
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path / "home"))
    assert imp.write_run("ok", *imp.convert(ckpt)).is_dir()  # a user_config that is not an object is ignored
    nan_in_wte(sd)
    torch.save(sd, ckpt / f"model_{STEP:06d}.pt")
    with pytest.raises(imp.NanochatImportError, match="NaN or inf"):
        imp.convert(ckpt)


def test_cli_errors_are_one_line(nanochat, tmp_path, capsys):
    ckpt = nanochat[0]
    assert cli(imp.main, [str(ckpt.parent), "--run", "a"]) == 2            # the base_checkpoints dir, not d2
    assert cli(imp.main, [str(ckpt), "--run", "a", "--step", "7"]) == 2
    shutil.move(ckpt.parent.parent / "tokenizer", tmp_path / "elsewhere")
    assert cli(imp.main, [str(ckpt), "--run", "a"]) == 2
    assert cli(imp.main, [str(ckpt), "--run", "a", "--tokenizer", str(tmp_path / "elsewhere")]) == 0
    assert cli(imp.main, [str(ckpt), "--run", "a", "--tokenizer", str(tmp_path / "elsewhere")]) == 2  # exists
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert "pass one of them" in err[0] and "has [120]" in err[1] and "--tokenizer" in err[2] and "--force" in err[3]
