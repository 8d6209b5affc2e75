"""The completion CLI on a tiny checkpoint: one-shot -p mode, the ### loop over piped stdin, clear errors."""
import io
import os
import subprocess
import sys

import pytest
import torch

from tinylab import complete as cli
from tinylab.checkpoint import load_model, save_checkpoint
from tinylab.run import Run
from tinylab.config import GPTConfig
from tinylab.engine import complete
from tinylab.model import build_model
from tinylab.tokenizer import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(home, run, seed=0, sequence_len=32):
    """A byte-level tokenizer and a randomly initialised model saved as run `run` under `home`."""
    tok = Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")
    model = build_model(GPTConfig(depth=1, model_dim=32, n_head=2, vocab_size=tok.vocab_size,
                                  sequence_len=sequence_len))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 1 / p.shape[-1] ** 0.5)
    run_dir = home / "runs" / run
    tok.save(run_dir / "tokenizer")
    save_checkpoint(Run(run_dir), 1, model, [], dict(run=run, tokenizer=dict(name=tok.name, hash=tok.hash)))
    return run_dir


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    write_run(tmp_path, "tiny")
    return tmp_path


def run_cli(args, stdin="", home=None):
    env = dict(os.environ, TINYLAB_HOME=str(home), PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "tinylab.complete", *args], input=stdin, text=True,
                          capture_output=True, env=env, cwd=REPO, timeout=60)


def expected(home, prompt, **kw):
    model, tok, _ = load_model(home / "runs" / "tiny")
    return complete(model, tok, prompt, **kw).text


def test_one_shot_prints_the_greedy_completion(home):
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--run", "tiny", "-p", "hello", "-t", "0", "-m", "12"], stdout=out, stderr=err) == 0
    want = expected(home, "hello", temperature=0, max_tokens=12)
    assert want and out.getvalue() == want + "\n"  # completion only: no echo, no ANSI codes off a terminal
    assert "\033[" not in out.getvalue() and err.getvalue() == ""


def test_loop_completes_each_block_before_the_trigger(home):
    stdin = "first line\nsecond\n###\nanother\n###\n"
    r = run_cli(["--run", "tiny", "-t", "0", "-m", "8"], stdin=stdin, home=home)  # a real pipe, end to end
    assert r.returncode == 0, r.stderr
    a = expected(home, "first line\nsecond", temperature=0, max_tokens=8)
    b = expected(home, "another", temperature=0, max_tokens=8)
    assert r.stdout == f"first line\nsecond{a}\nanother{b}\n"  # prompt echoed plain, then its completion
    assert "\033[" not in r.stdout and r.stderr.strip().endswith("bye")


def test_color_on_a_terminal(home):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    model, tok, _ = load_model(home / "runs" / "tiny")
    out = Tty()
    cli.Completer(model, tok, out, color=True, temperature=0, max_tokens=5)("hi")
    assert out.getvalue().startswith(f"{cli.GRAY}hi{cli.RESET}")


def test_text_left_at_end_of_input_is_completed_and_ctrl_c_exits_cleanly(home):
    assert list(cli.read_prompts(io.StringIO("a\n###\nb\nc"))) == ["a", "b\nc"]
    assert list(cli.read_prompts(io.StringIO("a\n###\n\n"))) == ["a"]

    class Interrupting(io.StringIO):
        def __iter__(self):
            raise KeyboardInterrupt
    err = io.StringIO()
    code = cli.main(["--run", "tiny"], stdin=Interrupting(), stdout=io.StringIO(), stderr=err)
    assert code == 0 and err.getvalue().endswith("bye\n")


def test_missing_run_is_one_clear_line(home):
    err = io.StringIO()
    assert cli.main(["--run", "nope", "-p", "x"], stdout=io.StringIO(), stderr=err) == 2
    msg = err.getvalue()
    assert msg.count("\n") == 1 and msg.startswith("error: no run 'nope'")
    assert "tiny" in msg  # names the runs that do exist


def test_tokenizer_mismatch_is_refused(home):
    other = Tokenizer({bytes([i]): 255 - i for i in range(256)}, name="bytes")
    other.save(home / "runs" / "tiny" / "tokenizer")  # same size, different ids: the hash differs
    err = io.StringIO()
    assert cli.main(["--run", "tiny", "-p", "x"], stdout=io.StringIO(), stderr=err) == 2
    assert "tokenizer hash" in err.getvalue()


def test_prompt_longer_than_context(home):
    err, out = io.StringIO(), io.StringIO()
    assert cli.main(["--run", "tiny", "-p", "x" * 40], stdout=out, stderr=err) == 2
    assert "context is 32" in err.getvalue() and out.getvalue() == ""
    err = io.StringIO()  # the loop reports it and carries on with the next prompt
    code = cli.main(["--run", "tiny", "-t", "0", "-m", "3"], stdin=io.StringIO("x" * 40 + "\n###\nok\n###\n"),
                    stdout=out, stderr=err)
    assert code == 0 and "context is 32" in err.getvalue() and out.getvalue().startswith("ok")


def test_completer_encodes_the_prompt_once(home):
    model, tok, _ = load_model(home / "runs" / "tiny")
    calls = []

    class Counting:  # the real tokenizer, counting encode calls
        def __getattr__(self, name):
            return getattr(tok, name)

        def encode(self, text, prepend_bos=False):
            calls.append(text)
            return tok.encode(text, prepend_bos=prepend_bos)

    out = io.StringIO()
    result = cli.Completer(model, Counting(), out, color=False, temperature=0, max_tokens=5)("hi")
    assert calls == ["hi"]
    assert result.text == expected(home, "hi", temperature=0, max_tokens=5) and out.getvalue() == "hi" + result.text + "\n"


def test_bad_settings_exit_before_loading(home):
    err = io.StringIO()
    assert cli.main(["--run", "tiny", "-t", "-1", "-p", "x"], stdout=io.StringIO(), stderr=err) == 2
    assert "temperature must be 0 (greedy) or at least" in err.getvalue()


def test_widget_generate_is_the_plain_function(home):
    from tinylab.widgets.complete import CompletionWidget, render
    model, tok, _ = load_model(home / "runs" / "tiny")
    w = CompletionWidget(model, tok, "a<b", temperature=0.7, top_k=5, max_tokens=9, seed=3)
    result = w.generate()
    assert result.text == complete(model, tok, "a<b", temperature=0.7, top_k=5, max_tokens=9, seed=3).text
    assert w.output.value == render("a<b", result.text) and "a&lt;b" in w.output.value
    assert "tok/s" in w.speed.value and not w.button.disabled
    w.prompt.value = "x" * 40  # longer than the context: reported in the label, nothing raised
    assert w.generate() is None and "context is 32" in w.speed.value
    assert w.output.value == render("x" * 40, "")  # not the last completion under the new prompt
    from tinylab.engine import GenerationError
    for bad, named in ((dict(temperature=-1), "temperature must be 0"), (dict(top_k=-5), "top_k must be >= 1"),
                       (dict(max_tokens=0), "max_tokens"), (dict(seed=None), "seed is a number")):
        with pytest.raises(GenerationError, match=named):  # refused, not shown as another value
            CompletionWidget(model, tok, "a", **bad)
    wide = CompletionWidget(model, tok, "a", top_k=1000, max_tokens=5000)
    assert (wide.top_k.value, wide.max_tokens.value) == (1000, 5000)


def test_cpu_with_an_index_is_the_cpu_and_a_seed_out_of_range_is_one_clear_error():
    """`--device cpu:0` loads checkpoints like `cpu` (safetensors refuses "cpu:0"); seeds reach torch in range."""
    import numpy as np

    from tinylab.devices import pick_device
    from tinylab.engine import GenerationError, check_seed

    assert pick_device("cpu:0") == pick_device("cpu") == torch.device("cpu")
    assert check_seed(None) is None and check_seed(np.int64(3)) == 3 and check_seed(2**64 - 1) == 2**64 - 1
    for bad in (2**64, -1, 1.5, "a", True):
        with pytest.raises(GenerationError, match="seed must be an integer from 0 to"):
            check_seed(bad)


@pytest.mark.parametrize("settings,named", [((0.8, 5.5, None, 10), "top_k must be an integer"),
                                            ((0.8, 5, None, "5"), "max_tokens must be an integer"),
                                            (("0.5", 5, None, 5), "temperature must be a number")])
def test_settings_of_the_wrong_type_are_one_clear_error(settings, named):
    from tinylab.engine import GenerationError, check_settings

    with pytest.raises(GenerationError, match=named):
        check_settings(*settings)
