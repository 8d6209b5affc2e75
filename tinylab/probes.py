"""Grammar probes: does the model prefer "The dogs sleep." to "The dogs sleeps."?

BLiMP's idea (Warstadt et al. 2020, minimal pairs) sized for 10-100M-parameter models, made
offline and deterministically from the templates and word lists below. A pair is a grammatical
sentence and an ungrammatical one that differ in exactly one word; the model gets the pair right
when it gives the grammatical one the higher log-probability (BOS + sentence, summed over the
sentence's tokens, so both sentences are scored whole). Each phenomenon is balanced: every pair
comes with a mirror pair in which the two critical words swap roles ("The dog sleeps." / *"The dog
sleep." and "The dogs sleep." / *"The dogs sleeps."), so a model that merely prefers the more
frequent word scores 50%.

    subject_verb            The dog sleeps every day.        *The dog sleep every day.
    subject_verb_attractor  The dog near the trees sleeps.   *The dog near the trees sleep.
    determiner_noun         The girl saw these boxes.        *The girl saw these box.
    reflexive               The king blamed himself.         *The king blamed themselves.
    pronoun_case            He saw the dog.                  *Him saw the dog.
    past_participle         The girl has eaten the apple.    *The girl has ate the apple.
    transitivity            The dog found the key.           *The dog slept the key.
                            The dog slept near the key.      *The dog found near the key.

Accuracy per phenomenon comes with a Wilson 95% interval; `above_chance` says whether the
interval lies above 50%.
"""
from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import paths
from .devices import autocast as device_autocast
from .errors import TinylabError

# 256 pairs give a 95% interval of about +-6 points around 50%: enough to tell a model that has
# learned a rule (>65%) from chance, and 7 x 512 short sentences score in seconds on a CPU.
PAIRS_PER_PHENOMENON = 256
Z95 = 1.959963984540054  # standard normal 97.5th percentile: a two-sided 95% interval

# -- word lists: common words a small model sees often ---------------------------------------
NOUNS = [  # animate subjects (singular, plural), some with irregular plurals
    ("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("horse", "horses"), ("teacher", "teachers"),
    ("student", "students"), ("doctor", "doctors"), ("farmer", "farmers"), ("child", "children"),
    ("man", "men"), ("woman", "women"), ("baby", "babies"), ("girl", "girls"), ("boy", "boys"),
    ("friend", "friends"), ("neighbor", "neighbors"), ("player", "players"), ("nurse", "nurses"),
    ("driver", "drivers"), ("singer", "singers"),
]
GENDERED = [  # (singular, plural, singular reflexive) for anaphor agreement
    ("man", "men", "himself"), ("woman", "women", "herself"), ("boy", "boys", "himself"),
    ("girl", "girls", "herself"), ("king", "kings", "himself"), ("queen", "queens", "herself"),
    ("father", "fathers", "himself"), ("mother", "mothers", "herself"), ("brother", "brothers", "himself"),
    ("sister", "sisters", "herself"), ("son", "sons", "himself"), ("daughter", "daughters", "herself"),
    ("uncle", "uncles", "himself"), ("aunt", "aunts", "herself"), ("husband", "husbands", "himself"),
    ("wife", "wives", "herself"),
]
THINGS = [  # inanimate nouns (singular, plural): attractors, objects
    ("tree", "trees"), ("house", "houses"), ("car", "cars"), ("door", "doors"), ("table", "tables"),
    ("window", "windows"), ("box", "boxes"), ("wall", "walls"), ("bench", "benches"), ("gate", "gates"),
    ("lamp", "lamps"), ("bridge", "bridges"), ("ball", "balls"), ("book", "books"), ("key", "keys"),
    ("chair", "chairs"),
]
PRESENT = [  # intransitive verbs (third person singular, plural): agreement is visible
    ("sleeps", "sleep"), ("runs", "run"), ("waits", "wait"), ("laughs", "laugh"), ("smiles", "smile"),
    ("sings", "sing"), ("works", "work"), ("swims", "swim"), ("walks", "walk"), ("jumps", "jump"),
    ("plays", "play"), ("rests", "rest"), ("talks", "talk"), ("dances", "dance"), ("cries", "cry"),
    ("eats", "eat"),
]
ADVERBIALS = ["every day", "at night", "in the morning", "all the time", "again", "quietly", "outside", "a lot"]
PREPOSITIONS = ["near", "behind", "beside", "under", "by"]
DETERMINERS = [  # (singular, plural) determiners that demand a number on their noun
    ("this", "these"), ("that", "those"), ("one", "two"), ("every", "many"), ("each", "several"),
    ("another", "both"),
]
PRONOUNS = [("he", "him"), ("she", "her"), ("we", "us"), ("they", "them"), ("I", "me")]  # (subject, object)
TRANSITIVE = [  # past tense, need an object: "*The dog found near the key."
    "found", "needed", "liked", "grabbed", "carried", "wanted", "used", "touched", "lifted", "fixed",
    "borrowed", "described",
]
INTRANSITIVE = [  # past tense, take no object: "*The dog slept the key."
    "slept", "arrived", "laughed", "smiled", "yawned", "fainted", "sneezed", "vanished", "coughed",
    "giggled", "shivered", "frowned",
]
REFLEXIVE_VERBS = [  # past tense (no agreement of their own), natural with a reflexive object
    "hurt", "blamed", "praised", "saw", "trusted", "helped", "washed", "introduced", "defended", "admired",
    "fooled", "surprised", "described", "taught", "pushed", "dressed",
]
IRREGULAR = [  # (past, past participle, object): the two forms differ, so each can be the wrong one
    ("ate", "eaten", "the apple"), ("wrote", "written", "a letter"), ("took", "taken", "the bus"),
    ("broke", "broken", "the window"), ("drove", "driven", "the car"), ("chose", "chosen", "a book"),
    ("stole", "stolen", "the money"), ("drew", "drawn", "a picture"), ("threw", "thrown", "the ball"),
    ("sang", "sung", "a song"), ("drank", "drunk", "the milk"), ("rode", "ridden", "a horse"),
    ("hid", "hidden", "the key"), ("shook", "shaken", "the box"), ("wore", "worn", "a hat"),
    ("forgot", "forgotten", "the name"), ("saw", "seen", "the movie"), ("did", "done", "the work"),
    ("knew", "known", "the answer"), ("began", "begun", "the game"),
]


def sentence(*words: str) -> str:
    """Words joined by spaces, first letter capitalised, full stop at the end."""
    text = " ".join(w for w in words if w)
    return text[0].upper() + text[1:] + "."


# -- templates: each turns one combination of words into a pair and its mirror ----------------
def _subject_verb(noun, verb, adverbial):
    (sg, pl), (v_sg, v_pl) = noun, verb
    return [(sentence("the", sg, v_sg, adverbial), sentence("the", sg, v_pl, adverbial)),
            (sentence("the", pl, v_pl, adverbial), sentence("the", pl, v_sg, adverbial))]


def _attractor(noun, thing, prep, verb):  # the noun in the PP always has the other number
    (sg, pl), (t_sg, t_pl), (v_sg, v_pl) = noun, thing, verb
    return [(sentence("the", sg, prep, "the", t_pl, v_sg), sentence("the", sg, prep, "the", t_pl, v_pl)),
            (sentence("the", pl, prep, "the", t_sg, v_pl), sentence("the", pl, prep, "the", t_sg, v_sg))]


def _determiner(noun, verb, det, thing):
    (d_sg, d_pl), (t_sg, t_pl) = det, thing
    return [(sentence("the", noun[0], verb, d_sg, t_sg), sentence("the", noun[0], verb, d_sg, t_pl)),
            (sentence("the", noun[0], verb, d_pl, t_pl), sentence("the", noun[0], verb, d_pl, t_sg))]


def _reflexive(noun, verb):
    sg, pl, self_ = noun
    return [(sentence("the", sg, verb, self_), sentence("the", sg, verb, "themselves")),
            (sentence("the", pl, verb, "themselves"), sentence("the", pl, verb, self_))]


def _pronoun_case(pronoun, verb, noun):
    subj, obj = pronoun
    return [(sentence(subj, verb, "the", noun[0]), sentence(obj, verb, "the", noun[0])),
            (sentence("the", noun[0], verb, obj), sentence("the", noun[0], verb, subj))]


def _past_participle(noun, verb):
    past, part, obj = verb
    return [(sentence("the", noun[0], past, obj), sentence("the", noun[0], part, obj)),
            (sentence("the", noun[0], "has", part, obj), sentence("the", noun[0], "has", past, obj))]


def _transitivity(noun, verbs, thing):  # "*The dog found near the key.": found needs an object
    (trans, intrans), obj, place = verbs, f"the {thing[0]}", f"near the {thing[0]}"
    return [(sentence("the", noun[0], trans, obj), sentence("the", noun[0], intrans, obj)),
            (sentence("the", noun[0], intrans, place), sentence("the", noun[0], trans, place))]


PHENOMENA = {  # name -> (the word lists to combine, the template)
    "subject_verb": ((NOUNS, PRESENT, ADVERBIALS), _subject_verb),
    "subject_verb_attractor": ((NOUNS, THINGS, PREPOSITIONS, PRESENT), _attractor),
    "determiner_noun": ((NOUNS, TRANSITIVE, DETERMINERS, THINGS), _determiner),
    "reflexive": ((GENDERED, REFLEXIVE_VERBS), _reflexive),
    "pronoun_case": ((PRONOUNS, REFLEXIVE_VERBS, NOUNS), _pronoun_case),
    "past_participle": ((NOUNS, IRREGULAR), _past_participle),
    # each transitive verb meets one intransitive one, so no sentence is in two pairs
    "transitivity": ((NOUNS, list(zip(TRANSITIVE, INTRANSITIVE)), THINGS), _transitivity),
}


class ProbeError(TinylabError):
    """Probes that cannot run as asked; the message says what to do."""


@dataclass(frozen=True)
class Pair:
    phenomenon: str
    good: str
    bad: str


def make_pairs(per_phenomenon: int = PAIRS_PER_PHENOMENON, seed: int = 0) -> list[Pair]:
    """per_phenomenon pairs of each phenomenon: half of them drawn combinations, half their mirrors.

    The draw is seeded per phenomenon (random.Random of a string hashes it with SHA-512, untouched by
    PYTHONHASHSEED), so the pairs are the same in every process; nanochat's CORE draws rely on the same.
    """
    if per_phenomenon < 2 or per_phenomenon % 2:
        raise ProbeError(f"per_phenomenon must be even and at least 2 (pairs come with mirrors), got {per_phenomenon}")
    pairs = []
    for name, (lists, template) in PHENOMENA.items():
        combos = list(itertools.product(*lists))
        if per_phenomenon // 2 > len(combos):
            raise ProbeError(f"{name} has {len(combos)} word combinations: at most {2 * len(combos)} pairs")
        for combo in random.Random(f"{seed}:{name}").sample(combos, per_phenomenon // 2):
            pairs += [Pair(name, good, bad) for good, bad in template(*combo)]
    return pairs


# -- scoring -------------------------------------------------------------------------------
def check_context(longest: int, sequence_len: int) -> None:
    """A model scores a sentence only if BOS + the sentence fits its context."""
    if longest > sequence_len:
        raise ProbeError(f"a probe sentence takes {longest} tokens (BOS included) with this tokenizer, more than the "
                         f"model's context of {sequence_len}: the probes need sequence_len >= {longest}; leave them "
                         f"out of training with probes_every=0")


def longest_sentence(tokenizer, pairs: list[Pair] | None = None) -> int:
    """Tokens of the longest probe sentence, BOS included: the context the probes need under this tokenizer."""
    ids = tokenizer.encode_batch([s for p in pairs or make_pairs() for s in (p.good, p.bad)], prepend_bos=True)
    return max(map(len, ids), default=0)


@torch.no_grad()
def sentence_logprobs(model, tokenizer, sentences: list[str], *, batch_size: int = 256, device=None,
                      progress: bool = False) -> list[float]:
    """log P(sentence | BOS) under the model: the sum over the sentence's tokens, in nats."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ids = tokenizer.encode_batch(list(sentences), prepend_bos=True)
    check_context(max(map(len, ids), default=0), model.config.sequence_len)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    out = [0.0] * len(ids)
    autocast = device_autocast(device)
    with autocast, tqdm(total=len(ids), unit="sent", desc="probes", disable=not progress) as bar:
        for k in range(0, len(order), batch_size):
            chunk = order[k:k + batch_size]
            x = torch.full((len(chunk), len(ids[chunk[-1]])), tokenizer.bos_id, dtype=torch.long)
            y = torch.full_like(x, -1)  # -1: no loss (padding, and the last token predicts nothing)
            for row, i in enumerate(chunk):
                t = torch.tensor(ids[i])
                x[row, :len(t)], y[row, :len(t) - 1] = t, t[1:]
            logits = model(x.to(device)).float()  # not the fused loss: it compiles for every shape on CUDA
            nll = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), ignore_index=-1, reduction="none")
            nll = nll.view(x.shape).sum(1)
            for row, i in enumerate(chunk):
                out[i] = -nll[row].item()
            bar.update(len(chunk))
    return out


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (stays inside [0, 1], fine at small n)."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return center - half, center + half


@dataclass
class ProbeResult:
    pairs: list[Pair]
    margins: list[float]  # log P(good) - log P(bad) per pair; right when > 0 (a tie counts as wrong)
    seconds: float = 0.0
    rows: list[dict] = field(init=False)

    def __post_init__(self):
        self.rows = []
        for name in dict.fromkeys(p.phenomenon for p in self.pairs):  # first-seen order
            got = [m > 0 for p, m in zip(self.pairs, self.margins) if p.phenomenon == name]
            lo, hi = wilson(sum(got), len(got))
            self.rows.append(dict(phenomenon=name, n=len(got), correct=sum(got), accuracy=sum(got) / len(got),
                                  ci_low=lo, ci_high=hi, above_chance=lo > 0.5))

    @property
    def accuracy(self) -> float:
        """Share of all pairs right (every phenomenon has the same weight when their sizes match)."""
        return sum(m > 0 for m in self.margins) / len(self.margins)

    @property
    def n(self) -> int:
        return len(self.pairs)

    def table(self):
        import pandas as pd
        return pd.DataFrame(self.rows)

    def to_csv(self, path) -> Path:
        return paths.atomic_write(path, self.table().to_csv(index=False))

    def record(self, step: int | None = None, tokens: int | None = None) -> dict:
        """This evaluation as a metrics.jsonl line (tinylab.run.RECORDS["probes"]); step and tokens say
        where in training the weights were. Per phenomenon: n and accuracy, in one dict."""
        phenomena = {r["phenomenon"]: dict(n=r["n"], accuracy=r["accuracy"]) for r in self.rows}
        return dict(kind="probes", step=step, tokens=tokens, accuracy=self.accuracy, n=self.n,
                    seconds=round(self.seconds, 3), phenomena=phenomena)

    def __repr__(self):
        return f"ProbeResult(accuracy={self.accuracy:.3f}, phenomena={len(self.rows)}, n={len(self.pairs)})"


def score_pairs(pairs: list[Pair], logprob) -> ProbeResult:
    """Score pairs with logprob(list of sentences) -> list of log-probabilities (each sentence once)."""
    t0 = time.perf_counter()
    sentences = sorted({s for p in pairs for s in (p.good, p.bad)})
    lp = dict(zip(sentences, logprob(sentences)))
    return ProbeResult(pairs, [lp[p.good] - lp[p.bad] for p in pairs], time.perf_counter() - t0)


def evaluate_probes(model, tokenizer, *, pairs: list[Pair] | None = None, batch_size: int = 256, device=None,
                    progress: bool = True) -> ProbeResult:
    """Every phenomenon's accuracy for a tinylab GPT, or anything with model(idx) -> logits and .config."""
    if not isinstance(getattr(tokenizer, "bos_id", None), int):
        raise ProbeError(f"probes score BOS + sentence, but {type(tokenizer).__name__} has no bos_id: "
                         f"use the tinylab Tokenizer saved with the checkpoint")
    return score_pairs(pairs or make_pairs(), lambda s: sentence_logprobs(
        model, tokenizer, s, batch_size=batch_size, device=device, progress=progress))
