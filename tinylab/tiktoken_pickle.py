"""Read a pickled tiktoken Encoding (nanochat's tokenizer.pkl) without running anything in it.

A pickle is a program: GLOBAL names any importable callable and REDUCE calls it, so
pickle.load on a file from elsewhere can run os.system. A tiktoken Encoding pickles as
(tiktoken.core.Encoding.__getstate__):

    STACK_GLOBAL tiktoken.core.Encoding; NEWOBJ (); BUILD {name, pat_str, mergeable_ranks, special_tokens}

so `find_class` admits that one name and hands back an inert stand-in that only keeps what
BUILD gives it; every other global is refused before it is imported. The state is then
checked to be plain str / bytes / int containers, and the caller builds its own Encoding
(tinylab.tokenizer.Tokenizer) from it.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

from .errors import TinylabError

ALLOWED = {("tiktoken.core", "Encoding")}


class UnsafePickleError(TinylabError):
    """A pickle that is not a plain tiktoken Encoding; nothing in it was run."""


class _EncodingState:
    """Stands in for tiktoken.core.Encoding: NEWOBJ creates it, BUILD passes it the state."""

    def __setstate__(self, state):
        self.state = state


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return _EncodingState
        raise UnsafePickleError(f"refusing {module}.{name}: a pickled tiktoken Encoding only names "
                                f"tiktoken.core.Encoding, so this file is not one (or was tampered with)")

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a persistent id: a pickled tiktoken Encoding has none")


def _check_state(state, where: str) -> dict:
    if isinstance(state, str):
        raise UnsafePickleError(f"{where} refers to tiktoken's registered encoding {state!r} by name instead of "
                                f"holding its ranks; tinylab needs the ranks themselves")
    want = {"name": str, "pat_str": str, "mergeable_ranks": dict, "special_tokens": dict}
    if not isinstance(state, dict) or set(state) != set(want) or \
            any(not isinstance(state[k], t) for k, t in want.items()):
        raise UnsafePickleError(f"{where} does not hold a tiktoken Encoding's state "
                                f"({', '.join(want)}); re-save the tokenizer with nanochat's tok_train.py")
    if not all(type(b) is bytes and type(r) is int for b, r in state["mergeable_ranks"].items()) or \
            not all(type(s) is str and type(i) is int for s, i in state["special_tokens"].items()):
        raise UnsafePickleError(f"{where}: mergeable_ranks must map bytes to int and special_tokens str to int")
    return state


def load_encoding_state(path) -> dict:
    """{name, pat_str, mergeable_ranks, special_tokens} of a pickled tiktoken Encoding, run-nothing safe."""
    path = Path(path)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - truncated or not a pickle at all: one message either way
        raise UnsafePickleError(f"{path} is not a readable pickle ({type(e).__name__}: {e}); copy it again "
                                f"from the nanochat base dir's tokenizer/") from None
    if not isinstance(obj, _EncodingState) or not hasattr(obj, "state"):
        raise UnsafePickleError(f"{path} holds a {type(obj).__name__}, not a tiktoken Encoding")
    return _check_state(obj.state, str(path))
