"""Export to transformers' NanoChat: same logits, same greedy tokens, same token ids, clear errors."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # the [hf] extra; never skipped

from tinylab import export as ex
from tinylab import paths
from tinylab.config import GPTConfig
from tinylab.engine import generate
from tinylab.errors import TinylabError, cli
from tinylab.model import build_model
from tinylab.run import Run

ITTYBITTY = GPTConfig(depth=4, model_dim=512, n_head=8, head_dim=64, vocab_size=24576, sequence_len=2048)
UNICODE = ("Hello 👋🏽 world! 👨‍👩‍👧 日本語のテキストと中文，한국어. café = cafe\u0301, Ω≈ç√, ½ ١٢٣ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\n"
           "numbers 3.14159 1,000,000 2024-06-01 0x1F\t\ttabs   runs of    spaces\n\n\n"
           "<|bos|> is text here, and so is x<|bos|>y; don't we'll I'M\r\n")


def randomize(model, seed=0):
    """Every weight random (tinylab's init zeroes the output projections, which would hide bugs)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 if p is model.transformer.wte.weight else p.shape[-1] ** -0.5)
    return model.eval()


def max_logit_diff(model, hf, ids):
    with torch.no_grad():
        return (model(ids) - hf(ids).logits).abs().max().item()


@pytest.fixture(scope="module")
def run():
    from tinylab.train import train
    train("smoke", "export-smoke", num_iterations=5, eval_tokens=2048, progress=False, overwrite=True)
    return "export-smoke"


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "smoke"
    assert cli(ex.main, ["--run", run, "--out", str(out)]) == 0
    return out


def test_export_loads_with_auto_classes_and_gives_the_same_logits(run, exported):
    from tinylab.checkpoint import load_model
    model, tok, _ = load_model(run)
    hf = AutoModelForCausalLM.from_pretrained(exported)
    assert type(hf).__name__ == "NanoChatForCausalLM" and hf.config.model_type == "nanochat"
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                        "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    ids = torch.randint(tok.vocab_size, (2, model.config.sequence_len), generator=torch.Generator().manual_seed(0))
    assert max_logit_diff(model, hf, ids) < 1e-4
    card = (exported / "README.md").read_text()
    for fact in ("| wte | 32,768 |", "| blocks | 98,304 |", "| lm_head | 32,768 |", "5,120 (5 steps × 1,024)",
                 "validation bits per byte: ", "| eval | 5 | val_bpb |"):
        assert fact in card


def test_greedy_generate_matches_the_engine(run, exported):
    from tinylab.checkpoint import load_model
    model, tok, _ = load_model(run)
    hf = AutoModelForCausalLM.from_pretrained(exported)
    prompt = tok.encode("The quick brown fox", prepend_bos=True)
    ours = [t for (t,) in generate(model, prompt, max_tokens=40, temperature=0)]
    greedy = GenerationConfig(do_sample=False, max_new_tokens=40, eos_token_id=None, pad_token_id=tok.bos_id)
    theirs = hf.generate(torch.tensor([prompt]), generation_config=greedy)[0, len(prompt):].tolist()
    assert theirs == ours


def test_tokenizer_gives_tinylab_ids(run, exported):
    from tinylab.checkpoint import load_model
    _, tok, _ = load_model(run)
    hf_tok = AutoTokenizer.from_pretrained(exported)
    assert hf_tok(UNICODE, add_special_tokens=False).input_ids == tok.encode(UNICODE)
    assert hf_tok(UNICODE).input_ids == tok.encode(UNICODE, prepend_bos=True)  # BOS starts every document
    assert tok.bos_id not in tok.encode(UNICODE)  # the literal "<|bos|>" stays text on both sides
    assert hf_tok.bos_token_id == hf_tok.eos_token_id == tok.bos_id == 511
    assert hf_tok.decode(tok.encode(UNICODE)) == UNICODE


def test_tokenizer_conversion_matches_tiktoken_on_a_larger_vocabulary():
    from tinylab.data import iter_texts
    from tinylab.tokenizer import train_tokenizer
    texts = list(iter_texts("sample", "val", max_chars=300_000))
    tok = train_tokenizer(texts, 4096, progress=False)
    hf_tok = ex.hf_tokenizer(tok, 2048)
    assert hf_tok(texts + [UNICODE], add_special_tokens=False).input_ids == tok.encode_batch(texts + [UNICODE])


@pytest.mark.parametrize("tied,n_kv_head", [(False, 4), (False, 1), (True, 2), (True, 4)])
def test_tied_and_gqa_variants_round_trip_through_files(tmp_path, tied, n_kv_head):
    config = GPTConfig(depth=2, model_dim=64, n_head=4, n_kv_head=n_kv_head, vocab_size=300, sequence_len=64,
                       tie_embeddings=tied)
    model = randomize(build_model(config))
    ex.to_transformers(model).save_pretrained(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert hf.config.tie_word_embeddings is tied and hf.config.num_key_value_heads == n_kv_head
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) is tied
    ids = torch.randint(300, (2, 64), generator=torch.Generator().manual_seed(1))
    assert max_logit_diff(model, hf, ids) < 1e-4


def test_ittybitty_logits_match():
    model = randomize(build_model(ITTYBITTY), seed=1)
    hf = ex.to_transformers(model)
    assert hf.num_parameters() == model.num_params() == 37_748_736
    ids = torch.randint(ITTYBITTY.vocab_size, (1, 48), generator=torch.Generator().manual_seed(2))
    assert max_logit_diff(model, hf, ids) < 1e-4


def test_bf16_export_is_bf16_and_close(run, tmp_path):
    from tinylab.checkpoint import load_model
    model, _, _ = load_model(run)
    assert cli(ex.main, ["--run", run, "--out", str(tmp_path / "bf16"), "--dtype", "bf16"]) == 0
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    assert hf.lm_head.weight.dtype == torch.bfloat16
    ids = torch.randint(512, (1, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits.float()).abs().max() < 0.1  # bf16 weights: ~3 significant digits


def test_a_field_nanochat_cannot_represent_is_named():
    class Sliding(GPTConfig):
        def to_dict(self):
            return {**super().to_dict(), "window_pattern": "SSSL"}
    with pytest.raises(ex.ExportError, match="'window_pattern'") as e:
        ex.hf_config(Sliding(depth=1, model_dim=64, vocab_size=300))
    assert isinstance(e.value, TinylabError)


def test_cli_refuses_a_non_empty_dir_without_force(run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli(ex.main, ["--run", run, "--out", str(out)]) == 2
    assert "error: " in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    assert cli(ex.main, ["--run", run, "--out", str(out), "--force"]) == 0
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temp or old dirs left behind


def test_force_replaces_a_previous_export(run, exported, tmp_path):
    # an export's config.json is a transformers config: not a run's, so --force may replace it
    out = tmp_path / "again"
    shutil.copytree(exported, out)
    assert not Run(out).exists()
    (out / "model.safetensors").write_bytes(b"stale")
    assert cli(ex.main, ["--run", run, "--out", str(out), "--force"]) == 0
    assert (out / "model.safetensors").read_bytes() == (exported / "model.safetensors").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temp or old dirs left behind


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def home(run, tmp_path, monkeypatch):
    """A $TINYLAB_HOME with a copy of the run and something in each of tinylab's other folders."""
    home = tmp_path / "home"
    shutil.copytree(Run.find(run).dir, home / "runs" / run)
    for name in paths.MANAGED:
        if name != "runs" and "." not in name:
            (home / name).mkdir()
            (home / name / "shard_00000.parquet").write_text("data")
    monkeypatch.setenv("TINYLAB_HOME", str(home))
    return home


@pytest.mark.parametrize("where", [*paths.MANAGED, "runs/new", "runs/export-smoke/checkpoints", "fineweb/x"])
def test_force_never_replaces_tinylabs_folders_or_writes_inside_them(run, home, where, capsys):
    before = digest(home)
    assert cli(ex.main, ["--run", run, "--out", str(home / where), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "give --out a directory of its own" in err
    assert digest(home) == before and sorted(p.name for p in home.iterdir()) == sorted(
        n for n in paths.MANAGED if "." not in n)  # nothing written next to them either


@pytest.mark.parametrize("marker", ["run", "sweep"])
def test_force_never_replaces_a_folder_that_holds_a_run_or_a_sweep(run, tmp_path, marker, capsys):
    mine = tmp_path / "mine"
    held = mine / "old" / "keep"
    if marker == "run":
        shutil.copytree(Run.find(run).dir, held)
    else:
        held.mkdir(parents=True)
        (held / "spec.json").write_text("{}")
    (mine / "notes.txt").write_text("mine")
    before = digest(mine)
    assert cli(ex.main, ["--run", run, "--out", str(mine), "--force"]) == 2
    err = capsys.readouterr().err
    assert f"holds the tinylab run or sweep {held}, which --force would delete" in err and len(err.splitlines()) == 1
    assert digest(mine) == before and [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_a_failed_export_leaves_nothing(run, tmp_path, monkeypatch):
    def broken(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ex, "hf_tokenizer", broken)
    assert cli(ex.main, ["--run", run, "--out", str(tmp_path / "out")]) == 1  # a full disk: one message, exit 1
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_one_line_with_exit_2(run, tmp_path, capsys):
    assert cli(ex.main, ["--run", "no-such-run", "--out", str(tmp_path / "a")]) == 2
    assert cli(ex.main, ["--run", run, "--out", str(tmp_path / "a"), "--step", "3"]) == 2
    assert cli(ex.main, ["--run", run, "--out", str(tmp_path / "a"), "--push-to-hub", "me/x"]) == 2  # offline
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "no checkpoint at step 3; it has 5" in err[1] and "HF_HUB_OFFLINE" in err[2]
    assert not (tmp_path / "a").exists()


def test_push_uses_create_repo_and_upload_folder(tmp_path, monkeypatch):
    import huggingface_hub
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("upload_folder", repo_id, folder_path))
            if repo_id == "me/denied":
                raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert ex.push_to_hub(tmp_path, "me/tiny") == "https://huggingface.co/me/tiny"
    assert calls == [("create_repo", "me/tiny"), ("upload_folder", "me/tiny", str(tmp_path))]
    with pytest.raises(ex.PushError, match="Name or service not known.*export in .* is complete"):
        ex.push_to_hub(tmp_path, "me/denied")


def test_model_card_lists_each_evaluation_and_its_parts():
    from tinylab.export import card_rows

    probes = dict(kind="probes", step=102, tokens=1, accuracy=0.608, n=1792, seconds=1.7,
                  phenomena={"agreement": dict(n=256, accuracy=0.6)})
    core = dict(kind="core", step=5, tokens=1, core=0.23, n=10, max_per_task=None, truncated=0, seconds=1.0,
                tasks={"hellaswag": dict(n=10, accuracy=0.3, baseline=0.25, centered=0.0667)})
    assert card_rows(probes) == ["| probes | 102 | accuracy | 0.608 |", "| probes | 102 | phenomenon: agreement | 0.6 |"]
    assert card_rows(core) == ["| core | 5 | core | 0.23 |", "| core | 5 | task: hellaswag | 0.0667 |"]
