"""Type text, get a base model's continuation: the seed's favourite tool, base_complete.

    python -m tinylab.complete --run smoke                 # interactive
    python -m tinylab.complete --run smoke -p "Once upon"  # one shot, for scripts
    python -m tinylab.complete --checkpoint PATH -t 0.5 -m 100 -k 20

Interactive: type any number of lines, then a line holding only `###` to complete them.
The model loads once and stays in memory. On a terminal the prompt is echoed in gray and
the completion streams in the normal color; piped, everything is plain text. Ctrl-C or
Ctrl-D (end of input) exits with status 0; text left before the end of input is completed.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, TextIO

from .engine import GenerationError, check_prompt, check_settings, complete
from .config import MAX_SEED
from .errors import ArgumentParser, between, cli

TRIGGER = "###"
GRAY, RESET = "\033[90m", "\033[0m"


class Completer:
    """A loaded model plus sampling settings; writes one completion to `out` per call."""

    def __init__(self, model, tokenizer, out: TextIO, color: bool, **settings):
        self.model, self.tokenizer, self.out, self.color, self.settings = model, tokenizer, out, color, settings

    def __call__(self, prompt: str, echo: bool = True):
        def write(s: str):
            self.out.write(s)
            self.out.flush()
        ids = self.tokenizer.encode(prompt, prepend_bos=True)
        check_prompt(self.model, len(ids))  # before echoing
        if echo:
            write(f"{GRAY}{prompt}{RESET}" if self.color else prompt)
        result = complete(self.model, self.tokenizer, prompt, on_text=write, prompt_ids=ids, **self.settings)
        write("\n")
        return result


def read_prompts(lines, prompt_marker: Callable[[], None] = lambda: None):
    """Yield the text typed before each `###` line (and any text left at end of input)."""
    buf: list[str] = []
    prompt_marker()
    for line in lines:
        line = line.rstrip("\n")
        if line.strip() == TRIGGER:
            yield "\n".join(buf)
            buf = []
        else:
            buf.append(line)
        prompt_marker()
    if any(s.strip() for s in buf):
        yield "\n".join(buf)


def interactive(completer: Completer, stdin: TextIO, err: TextIO, tty: bool) -> int:
    marker = (lambda: err.write("> ") or err.flush()) if tty else (lambda: None)
    err.write(f"Type text, then a line with {TRIGGER} to complete it. Ctrl-C or Ctrl-D exits.\n")
    try:
        for prompt in read_prompts(stdin, marker):
            try:
                result = completer(prompt)
            except GenerationError as e:  # e.g. a prompt longer than the context: say so, keep going
                err.write(f"error: {e}\n")
                continue
            if tty:
                err.write(f"[{len(result.token_ids)} tokens, {result.tok_per_s:.1f} tok/s, {result.finish_reason}]\n")
    except KeyboardInterrupt:
        pass
    err.write("\nbye\n" if tty else "bye\n")
    return 0


def parse_args(argv=None):
    p = ArgumentParser(prog="python -m tinylab.complete", description=__doc__.split("\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="run name under $TINYLAB_HOME/runs (default: the preset's name)")
    src.add_argument("--checkpoint", help="a run directory or a checkpoint directory")
    p.add_argument("--step", type=int, help="the checkpoint of this step (default: the newest)")
    p.add_argument("--device", default="cpu", help="cpu (default: fast enough for a tiny model), cuda, mps")
    p.add_argument("-t", "--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("-k", "--top-k", type=int, default=50, help="sample among the k likeliest tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold, e.g. 0.9")
    p.add_argument("-m", "--max-tokens", type=int, default=200, help="new tokens per completion (default 200)")
    p.add_argument("-s", "--seed", type=between(int, "--seed", 0, MAX_SEED), default=None,
                   help="fix the sampling seed (default: random)")
    p.add_argument("-p", "--prompt", help="complete this text once, print the completion and exit")
    return p.parse_args(argv)


def load(args, stderr: TextIO):
    """(model, tokenizer, meta) of the run or checkpoint the arguments name."""
    from .checkpoint import load_model
    from .devices import pick_device

    source = args.checkpoint if args.checkpoint is not None else args.run
    if source is None:
        from .presets import preset_from_env
        source = preset_from_env().name
    model, tokenizer, meta = load_model(source, device=pick_device(args.device), step=args.step)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise GenerationError(f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} ids but the model only "
                              f"{model.config.vocab_size}: this checkpoint was trained with another tokenizer")
    return model, tokenizer, meta


def main(argv=None, stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """The CLI; the streams can be given (tests), errors become one `error: ...` line on stderr."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    return cli(lambda a: run(a, stdin, stdout, stderr), argv, stderr=stderr)


def run(argv, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    args = parse_args(argv)
    check_settings(args.temperature, args.top_k or None, args.top_p, args.max_tokens)
    try:
        model, tokenizer, meta = load(args, stderr)
    except KeyboardInterrupt:
        return 0
    settings = dict(temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p,
                    max_tokens=args.max_tokens, seed=args.seed)
    tty = stdout.isatty()
    completer = Completer(model, tokenizer, stdout, color=tty, **settings)
    if args.prompt is not None:
        try:
            completer(args.prompt, echo=False)
        except KeyboardInterrupt:
            stdout.write("\n")
        return 0
    stderr.write(f"loaded {meta['checkpoint']} ({model.config.describe()})\n")
    return interactive(completer, stdin, stderr, tty and stdin.isatty())


if __name__ == "__main__":
    sys.exit(main())
