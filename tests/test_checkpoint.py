"""Checkpoints: exact round trip (weights, optimizer, RNG), tied weights, atomicity, clear errors."""
import json
import os

import pytest
import torch

from tinylab import checkpoint
from tinylab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinylab.config import GPTConfig
from tinylab.model import build_model
from tinylab.optim import setup_optimizers
from tinylab.run import Run, RunError

CFG = GPTConfig(depth=1, model_dim=32, head_dim=16, vocab_size=64, sequence_len=16)


def stepped(cfg, steps=2, seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg)
    opts = setup_optimizers(model)
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    for _ in range(steps):
        model(x, x).backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
    return model, opts, x


def one_step(model, opts, x):
    model(x, x).backward()
    for o in opts:
        o.step()
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_continues_bit_identically(tmp_path, tied):
    cfg = GPTConfig(**{**CFG.to_dict(), "tie_embeddings": tied})
    model, opts, x = stepped(cfg)
    ckpt = save_checkpoint(Run(tmp_path), 2, model, opts, dict(loader={"batch": 7}))
    expected_rand = torch.rand(3)  # what the RNG gives right after the save
    model2, opts2, _ = stepped(cfg, steps=0, seed=99)  # different init, empty optimizer state
    torch.manual_seed(123)
    meta = load_checkpoint(ckpt, model2, opts2)
    assert meta["step"] == 2 and meta["loader"] == {"batch": 7}
    assert torch.equal(torch.rand(3), expected_rand)  # RNG restored to the saved state
    if tied:
        assert model2.lm_head.weight is model2.transformer.wte.weight
    one_step(model, opts, x)
    one_step(model2, opts2, x)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_files_are_safetensors_and_json_only(tmp_path):
    model, opts, _ = stepped(CFG)
    ckpt = save_checkpoint(Run(tmp_path), 5, model, opts, {})
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint.json", "model.safetensors", "optim.safetensors"]
    json.loads((ckpt / "checkpoint.json").read_text())


def test_keeps_newest_and_ignores_partial_writes(tmp_path):
    model, opts, _ = stepped(CFG, steps=1)
    for step in (1, 2, 3):
        save_checkpoint(Run(tmp_path), step, model, opts, {}, keep=2)
    assert [p.name for p in Run(tmp_path).checkpoints()] == ["step_000002", "step_000003"]
    (tmp_path / "checkpoints" / ".tmp-step_000004-x").mkdir()       # a crash mid-write
    (tmp_path / "checkpoints" / "step_000005").mkdir()              # no checkpoint.json: incomplete
    assert Run(tmp_path).latest_checkpoint().name == "step_000003"


def test_architecture_mismatch_and_missing_run_are_clear(tmp_path, monkeypatch):
    model, opts, _ = stepped(CFG, steps=1)
    ckpt = save_checkpoint(Run(tmp_path), 1, model, opts, {})
    other = build_model(GPTConfig(**{**CFG.to_dict(), "depth": 2}))
    with pytest.raises(CheckpointError, match="different architecture"):
        load_checkpoint(ckpt, other)
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    with pytest.raises(RunError, match="no run 'nope'.*python -m tinylab.train"):
        checkpoint.load_model("nope")
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    (tmp_path / "runs" / "empty" / "config.json").write_text("{}")
    with pytest.raises(RunError, match="run 'empty' has no checkpoint yet.*python -m tinylab.train"):
        checkpoint.load_model("empty")


def test_load_model_refuses_a_different_tokenizer(tmp_path, monkeypatch):
    from tinylab.tokenizer import TokenizerError, train_tokenizer

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    texts = ["the cat sat on the mat. " * 20, "a dog ate the hat! " * 20]
    tok = train_tokenizer(texts, 270, progress=False)
    model, opts, _ = stepped(CFG, steps=1)
    run = tmp_path / "runs" / "r"
    tok.save(run / "tokenizer")
    save_checkpoint(Run(run), 1, model, opts, dict(tokenizer=dict(name=tok.name, hash=tok.hash)))
    loaded, tok2, meta = checkpoint.load_model("r")
    assert not loaded.training and tok2.hash == tok.hash and meta["step"] == 1
    other = train_tokenizer(texts, 265, progress=False)
    other.save(run / "tokenizer")
    with pytest.raises(TokenizerError, match="trained with tokenizer hash"):
        checkpoint.load_model(run)


def test_resume_keeps_the_requested_initial_lr(tmp_path):
    model, opts, _ = stepped(CFG)
    ckpt = save_checkpoint(Run(tmp_path), 2, model, opts, {})
    torch.manual_seed(0)
    model2 = build_model(CFG)
    opts2 = setup_optimizers(model2, matrix_lr=0.5, embedding_lr=0.3)
    wanted = [[g["initial_lr"] for g in o.param_groups] for o in opts2]
    load_checkpoint(ckpt, model2, opts2)
    assert [[g["initial_lr"] for g in o.param_groups] for o in opts2] == wanted
    assert opts2[1].param_groups[0]["initial_lr"] == 0.5
    assert opts2[1].state_dict()["state"].keys() == opts[1].state_dict()["state"].keys()  # state restored


def test_resaving_a_step_that_fails_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import os

    model, opts, _ = stepped(CFG, steps=1)
    save_checkpoint(Run(tmp_path), 3, model, opts, dict(version=1))
    rename = os.rename

    def failing_rename(src, dst):
        if os.path.basename(src).startswith(".tmp-"):  # the new checkpoint cannot be moved in
            raise OSError("disk full")
        rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(Run(tmp_path), 3, model, opts, dict(version=2))
    monkeypatch.undo()
    assert checkpoint.read_meta(Run(tmp_path).latest_checkpoint())["version"] == 1
    save_checkpoint(Run(tmp_path), 3, model, opts, dict(version=2))
    assert checkpoint.read_meta(Run(tmp_path).latest_checkpoint())["version"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000003"]  # nothing left aside


def test_atomic_write_bytes_and_str_and_cleans_up_on_failure(tmp_path, monkeypatch):
    import os

    from tinylab import paths

    target = tmp_path / "f.json"
    paths.atomic_write(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo" and (target.stat().st_mode & 0o777) == 0o644
    paths.atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"

    def broken_replace(src, dst):
        raise OSError("no space")

    monkeypatch.setattr(paths.os, "replace", broken_replace)
    with pytest.raises(OSError, match="no space"):
        paths.atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["f.json"]  # no temp file left
    checkpoint.write_json(tmp_path / "c.json", {"a": 1})
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": 1}
    assert ((tmp_path / "c.json").stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("tied", [False, True])
def test_writer_saves_the_moment_of_save_while_training_goes_on(tmp_path, tied):
    """CheckpointWriter writes on a thread what the model held when save() was called, as save_checkpoint does."""
    cfg = GPTConfig(**{**CFG.to_dict(), "tie_embeddings": tied})
    model, opts, x = stepped(cfg)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    sync = save_checkpoint(Run(tmp_path / "sync"), 2, model, opts, dict(loader={"batch": 7}))
    writer = checkpoint.CheckpointWriter()
    writer.save(Run(tmp_path / "async"), 2, model, opts, dict(loader={"batch": 7}))
    one_step(model, opts, x)  # the live weights move on before the thread is done
    writer.wait()
    ckpt = Run(tmp_path / "async").latest_checkpoint()
    for name in ("model.safetensors", "optim.safetensors"):
        assert (ckpt / name).read_bytes() == (sync / name).read_bytes(), name
    assert checkpoint.read_meta(ckpt) == checkpoint.read_meta(sync)
    model2, opts2, _ = stepped(cfg, steps=0, seed=99)
    load_checkpoint(ckpt, model2, opts2)
    assert all(torch.equal(v, expected[k]) for k, v in model2.state_dict().items())


def test_writer_hands_a_failed_write_to_the_next_call_and_keeps_the_older_checkpoint(tmp_path, monkeypatch):
    model, opts, _ = stepped(CFG, steps=1)
    writer = checkpoint.CheckpointWriter()
    writer.save(Run(tmp_path), 1, model, opts, dict(version=1))
    writer.wait()
    rename = os.rename

    def full_disk(src, dst):
        if os.path.basename(src).startswith(".tmp-"):
            raise OSError(28, "No space left on device")
        rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", full_disk)
    writer.save(Run(tmp_path), 2, model, opts, dict(version=2))  # returns while the thread fails
    writer.join()
    with pytest.raises(OSError, match="No space left"):
        writer.poll()  # the failure, as soon as the write has ended
    writer.save(Run(tmp_path), 2, model, opts, dict(version=2))
    with pytest.raises(OSError, match="No space left"):
        writer.save(Run(tmp_path), 3, model, opts, dict(version=3))  # the next call hands the error over
    writer.wait()  # raised once; no write in flight
    monkeypatch.undo()
    assert [p.name for p in Run(tmp_path).checkpoints()] == ["step_000001"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no partial directory


# ---------------------------------------------------------------- integrity: the sha256 of each data file

DATA_FILES = ("model.safetensors", "optim.safetensors")


def flip_tensor_bytes(path):
    """Garble a safetensors file in place, the kind of damage its own checks miss: four bytes inverted in the middle
    of its tensor data (past the header), the length unchanged."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # the header's length, then the header: tensor data follows
    middle = (start + len(data)) // 2
    assert start < middle < len(data) - 4
    for i in range(middle, middle + 4):
        data[i] ^= 0xFF
    path.write_bytes(data)


def edit_meta(ckpt, fn):
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    (ckpt / "checkpoint.json").write_text(json.dumps(fn(meta)))


@pytest.mark.parametrize("tied", [False, True])
def test_the_recorded_sha256_is_that_of_the_bytes_on_disk(tmp_path, monkeypatch, tied):
    """Hashed from the tensors written (and from the file where its layout is not the expected one), on the writer
    thread: either way the digest is the file's."""
    import hashlib
    import threading

    cfg = GPTConfig(**{**CFG.to_dict(), "tie_embeddings": tied})
    model, opts, _ = stepped(cfg)
    threads = []
    written = checkpoint._written_digest
    monkeypatch.setattr(checkpoint, "_written_digest", lambda *a: threads.append(threading.current_thread().name)
                        or written(*a))
    writer = checkpoint.CheckpointWriter()
    writer.save(Run(tmp_path / "async"), 2, model, opts, {})
    writer.wait()
    assert threads == ["tinylab-checkpoint"] * 2  # not the training thread's time
    monkeypatch.setattr(checkpoint, "_raw_bytes", lambda t: None)  # as if the layout were unexpected: from disk
    from_disk = save_checkpoint(Run(tmp_path / "sync"), 2, model, opts, {})
    for ckpt in (Run(tmp_path / "async").latest_checkpoint(), from_disk):
        recorded = checkpoint.read_meta(ckpt)["sha256"]
        assert recorded == {name: hashlib.sha256((ckpt / name).read_bytes()).hexdigest() for name in DATA_FILES}
        load_checkpoint(ckpt, *stepped(cfg, steps=0, seed=99)[:2])  # intact: loads


@pytest.mark.parametrize("name", DATA_FILES)
def test_a_data_file_garbled_in_place_is_refused_naming_it(tmp_path, name):
    from safetensors.torch import load_file

    model, opts, _ = stepped(CFG)
    for step in (1, 2):
        ckpt = save_checkpoint(Run(tmp_path), step, model, opts, {}, keep=2)
    flip_tensor_bytes(ckpt / name)
    load_file(str(ckpt / name))  # safetensors itself sees nothing wrong: it would resume from garbage
    model2, opts2, _ = stepped(CFG, steps=0, seed=99)
    with pytest.raises(CheckpointError, match=rf"step_000002/{name} is damaged: its bytes changed since it was "
                                              rf"written .* move .*step_000002 aside .* earlier checkpoint step_000001"):
        load_checkpoint(ckpt, model2, opts2)
    assert (ckpt / name).is_file()  # nothing deleted
    load_checkpoint(Run(tmp_path).checkpoints()[0], model2, opts2)  # the earlier one is intact
    for other in Run(tmp_path).checkpoints()[:1]:
        other.rename(tmp_path / "aside")
    with pytest.raises(CheckpointError, match="the run keeps no earlier checkpoint: train it again"):
        load_checkpoint(ckpt, model2, opts2)


def test_weights_only_loads_check_only_the_weights(tmp_path):
    """Evaluation, sampling and export read model.safetensors alone: the optimizer state is not hashed for them."""
    model, opts, _ = stepped(CFG)
    ckpt = save_checkpoint(Run(tmp_path), 2, model, opts, {})
    flip_tensor_bytes(ckpt / "optim.safetensors")
    load_checkpoint(ckpt, stepped(CFG, steps=0)[0])
    flip_tensor_bytes(ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors is damaged"):
        load_checkpoint(ckpt, stepped(CFG, steps=0)[0])


def test_a_checkpoint_json_without_hashes_loads_unchecked(tmp_path):
    """Checkpoints written before the hashes were recorded load as before (and so would a garbled one)."""
    model, opts, _ = stepped(CFG)
    ckpt = save_checkpoint(Run(tmp_path), 2, model, opts, {})
    edit_meta(ckpt, lambda meta: {k: v for k, v in meta.items() if k != "sha256"})
    model2, opts2, _ = stepped(CFG, steps=0, seed=99)
    load_checkpoint(ckpt, model2, opts2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    flip_tensor_bytes(ckpt / "model.safetensors")
    load_checkpoint(ckpt, model2, opts2)  # nothing recorded, nothing to check


@pytest.mark.parametrize("digests", [
    "0" * 64, ["0" * 64], {"model.safetensors": 5}, {"model.safetensors": "not hex"},
    {"model.safetensors": "A" * 64}, {"model.safetensors": "0" * 63}, {"weights.bin": "0" * 64}, None,
])
def test_a_hash_field_of_the_wrong_shape_is_a_damaged_checkpoint_json(tmp_path, digests):
    model, opts, _ = stepped(CFG, steps=1)
    ckpt = save_checkpoint(Run(tmp_path), 1, model, opts, {})
    edit_meta(ckpt, lambda meta: dict(meta, sha256=digests))
    with pytest.raises(CheckpointError, match="checkpoint.json is damaged \\('sha256' is not an object from "
                                              "model.safetensors or optim.safetensors to 64 hex digits\\); delete"):
        checkpoint.read_meta(ckpt)
