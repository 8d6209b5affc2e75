"""Grammar probes: the pairs are deterministic, minimal and balanced; scoring and intervals are right."""
import json
import time
from collections import Counter

import pytest
import torch

from tinylab import probes
from tinylab.probes import Pair, ProbeError, evaluate_probes, make_pairs, score_pairs, wilson
from tinylab.run import RECORDS
from tinylab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def pairs():
    return make_pairs()


def critical_words(pair: Pair) -> tuple[str, str]:
    """The one word where good and bad differ (lower-cased: "He" / "Him" opens a sentence)."""
    g, b = pair.good.lower().rstrip(".").split(), pair.bad.lower().rstrip(".").split()
    assert len(g) == len(b), pair
    diff = [(x, y) for x, y in zip(g, b) if x != y]
    assert len(diff) == 1, pair
    return diff[0]


def test_pairs_are_deterministic():
    assert make_pairs() == make_pairs()
    assert make_pairs(seed=1) != make_pairs()


def test_at_least_six_phenomena_of_at_least_200_pairs(pairs):
    counts = Counter(p.phenomenon for p in pairs)
    assert len(counts) >= 6 and min(counts.values()) >= 200
    assert list(counts) == list(probes.PHENOMENA)


def test_pairs_differ_in_one_word_and_are_unique(pairs):
    sentences = [s for p in pairs for s in (p.good, p.bad)]
    assert len(set(sentences)) == len(sentences)  # no sentence is in two pairs: the pairs are independent trials
    for p in pairs:
        critical_words(p)
        assert p.good != p.bad and p.good[0].isupper() and p.good.endswith(".")


def test_each_phenomenon_is_balanced(pairs):
    """Every word that is right in some pair is wrong in as many others, so word frequency alone
    scores exactly 50%."""
    for name in probes.PHENOMENA:
        words = [critical_words(p) for p in pairs if p.phenomenon == name]
        assert Counter(g for g, _ in words) == Counter(b for _, b in words), name


def test_a_scorer_that_knows_grammar_scores_100_and_its_inverse_0(pairs):
    good = {p.good for p in pairs}
    right = score_pairs(pairs, lambda s: [1.0 if x in good else 0.0 for x in s])
    wrong = score_pairs(pairs, lambda s: [0.0 if x in good else 1.0 for x in s])
    assert right.accuracy == 1.0 and all(r["above_chance"] for r in right.rows)
    assert wrong.accuracy == 0.0 and not any(r["above_chance"] for r in wrong.rows)
    tie = score_pairs(pairs, lambda s: [0.0] * len(s))
    assert tie.accuracy == 0.0  # a tie is not a preference


def test_word_frequency_alone_scores_half(pairs):
    """A scorer that only likes some words (here: shorter ones) gets exactly 50% on balanced pairs."""
    result = score_pairs(pairs, lambda s: [-float(len(x)) for x in s])
    for r in result.rows:
        diff_len = [p for p in pairs if p.phenomenon == r["phenomenon"] and len(p.good) != len(p.bad)]
        assert r["correct"] * 2 == len(diff_len)  # half of the pairs whose lengths differ, none of the ties


def test_wilson_interval_by_hand():
    # 8 of 10: p = 0.8, z^2 = 3.8415; center = (0.8 + 0.19207) / 1.38415 = 0.71674,
    # half = 1.96 * sqrt(0.016 + 0.0096036) / 1.38415 = 0.22658
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-5) and hi == pytest.approx(0.94332, abs=1e-5)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    lo, hi = wilson(128, 256)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.5 / 16, rel=0.01)


def test_table_csv_and_record(pairs, tmp_path):
    result = score_pairs(pairs, lambda s: [float(hash(x) % 7) for x in s])
    table = result.table()
    assert list(table.columns) == ["phenomenon", "n", "correct", "accuracy", "ci_low", "ci_high", "above_chance"]
    assert (table.ci_low <= table.accuracy).all() and (table.accuracy <= table.ci_high).all()
    assert result.to_csv(tmp_path / "p.csv").read_text().splitlines()[0].startswith("phenomenon,n,correct")
    rec = json.loads(json.dumps(result.record(step=3, tokens=3072)))
    assert rec.pop("kind") == "probes" and list(rec) == list(RECORDS["probes"])  # the metrics schema, in its order
    assert rec["n"] == len(pairs) and (rec["step"], rec["tokens"]) == (3, 3072)
    assert list(rec["phenomena"]) == list(probes.PHENOMENA)
    row = table.set_index("phenomenon").loc["reflexive"]
    assert rec["phenomena"]["reflexive"] == dict(n=row.n, accuracy=row.accuracy)


def test_sentence_logprobs_sum_the_tokens_after_bos():
    from tinylab.model import build_model
    from tinylab.presets import get_preset
    torch.manual_seed(0)
    model = build_model(get_preset("smoke").model)
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)
    tok = Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")
    sentences = ["The dog runs.", "Hi.", "The dogs near the tree run."]
    got = probes.sentence_logprobs(model, tok, sentences, batch_size=2)
    for text, lp in zip(sentences, got):
        ids = torch.tensor([tok.encode(text, prepend_bos=True)])
        logp = torch.log_softmax(model(ids)[0, :-1], -1)
        assert lp == pytest.approx(logp.gather(1, ids[0, 1:, None]).sum().item(), abs=1e-4)


def test_smoke_model_runs_every_probe():
    from tinylab.model import build_model
    from tinylab.presets import get_preset
    model = build_model(get_preset("smoke").model)
    tok = Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")  # more tokens than a BPE: a worst case
    t0 = time.perf_counter()
    result = evaluate_probes(model, tok, progress=False)
    assert time.perf_counter() - t0 < 60  # ~3 s batched on 2 idle cores; one forward per sentence takes minutes
    assert len(result.rows) == len(probes.PHENOMENA) and all(0 <= r["accuracy"] <= 1 for r in result.rows)


def test_bad_requests():
    with pytest.raises(ProbeError, match="even"):
        make_pairs(3)
    with pytest.raises(ProbeError, match="reflexive has 256 word combinations"):
        make_pairs(1000)
    with pytest.raises(ProbeError, match="no bos_id"):
        evaluate_probes(None, object(), pairs=[])
