"""Selection rules beside argmax: vote (self-consistency), weighted best-of-N and adaptive N,
each checked against a brute-force definition on small cases, and end to end."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl

from bestofn.commands import main
from bestofn.config import Config, SelectionConfig
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, child_seed, quoted_response
from bestofn.errors import ConfigError
from bestofn.pipeline import BestOfN
from bestofn.selection import adaptive_next, margin, select_index, weights
from bestofn.values import Candidate, Score

ANSWER = r"answer is (\w+)"


def brute_force(
    texts: list[str], values: list[float | None], rule: str, mode: str = "softmax"
) -> int | None:
    """The definition, spelled out: group by answer, total votes or weights, the largest
    total wins (ties: the best score in the group, then first occurrence), and within the
    group the best score wins (ties: the lowest index; all unscored: the first)."""
    import re

    found = []
    for text in texts:
        match = re.search(ANSWER, text)
        found.append(match.group(1).casefold() if match else None)
    scored = [v for v in values if v is not None]
    if mode == "softmax":
        w = (
            [0.0 if v is None else math.exp(v - max(scored)) for v in values]
            if scored
            else [0.0] * len(values)
        )
    else:
        order = sorted(scored)
        w = []
        for v in values:
            if v is None:
                w.append(0.0)
            else:
                positions = [p + 1 for p, x in enumerate(order) if x == v]
                w.append(sum(positions) / len(positions) / len(order))
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(found):
        if a is not None:
            groups.setdefault(a, []).append(i)
    if not groups or (rule == "weighted" and not any(w[i] for g in groups.values() for i in g)):
        return None  # no answer, or every answer weighs 0: the rule falls back to argmax

    def total(a: str) -> float:
        return sum(1.0 if rule == "vote" else w[i] for i in groups[a])

    def best(a: str) -> float:
        return max((values[i] for i in groups[a] if values[i] is not None), default=-math.inf)

    names = list(groups)
    winner = max(names, key=lambda a: (total(a), best(a), -names.index(a)))
    members = groups[winner]
    scored_members = [i for i in members if values[i] is not None]
    if not scored_members:
        return members[0]
    top = max(values[i] for i in scored_members)  # type: ignore[type-var]
    return min(i for i in scored_members if values[i] == top)


@pytest.mark.parametrize("rule", ["vote", "weighted"])
@pytest.mark.parametrize("mode", ["softmax", "rank"])
def test_rules_match_brute_force_on_random_small_cases(rule: str, mode: str) -> None:
    rng = random.Random(7)
    config = SelectionConfig(rule=rule, extractor=ANSWER, weights=mode)  # type: ignore[arg-type]
    checked = 0
    for _ in range(400):
        n = rng.randint(1, 5)
        texts = [
            rng.choice(["the answer is A", "answer is b", "ANSWER IS A?", "no idea", "answer is C"])
            for _ in range(n)
        ]
        values = [rng.choice([None, 0.0, 0.5, 1.0, 2.0]) for _ in range(n)]
        expected = brute_force(texts, values, rule, mode)
        got, fallback = select_index(
            [Candidate(t) for t in texts], [_score(v) for v in values], config
        )
        if expected is None:
            assert fallback is not None and fallback.startswith(f"{rule}:no_answer")
            continue
        assert (got, fallback) == (expected, None), (texts, values)
        checked += 1
    assert checked > 200


def _score(value: float | None) -> Score:
    return Score(value) if value is not None else Score.unscored("x")


def test_vote_by_hand() -> None:
    config = SelectionConfig(rule="vote", extractor=ANSWER)
    texts = ["answer is 4", "answer is 5", "answer is 4", "I think the answer is 5", "nothing"]
    values = [0.1, 0.9, 0.2, 0.8, 5.0]
    # 4 and 5 have two votes each; 5's best score (0.9) beats 4's (0.2); within 5, index 1.
    assert select_index([Candidate(t) for t in texts], [Score(v) for v in values], config) == (
        1,
        None,
    )
    # The unanswered candidate's top score does not matter; weighted (softmax, T=1) sums
    # exp(s - 5): 4 gets e^-4.9 + e^-4.8, 5 gets e^-4.1 + e^-4.2: 5 wins.
    weighted = SelectionConfig(rule="weighted", extractor=ANSWER)
    assert select_index([Candidate(t) for t in texts], [Score(v) for v in values], weighted) == (
        1,
        None,
    )


def test_weights_by_hand() -> None:
    config = SelectionConfig(weights="rank")
    # Ranks among the three scored: 1 -> 1/3, 2 (twice, positions 2 and 3) -> 5/6 each.
    assert weights([Score(1.0), Score(2.0), Score(2.0), Score.unscored("x")], config) == [
        pytest.approx(1 / 3),
        pytest.approx(5 / 6),
        pytest.approx(5 / 6),
        0.0,
    ]
    soft = weights([Score(0.0), Score(math.log(2))], SelectionConfig(temperature=1.0))
    assert soft == [pytest.approx(0.5), pytest.approx(1.0)]


def test_margin_by_hand() -> None:
    argmax = SelectionConfig()
    assert margin([Candidate("a"), Candidate("b")], [Score(1.0), Score(0.25)], argmax) == 0.75
    assert margin([Candidate("a")], [Score(1.0)], argmax) == 0.0  # no runner-up yet
    vote = SelectionConfig(rule="vote", extractor=ANSWER)
    texts = ["answer is x", "answer is x", "answer is y", "none"]
    # x: 2 votes, y: 1, of 3 votes: (2 - 1) / 3.
    assert margin([Candidate(t) for t in texts], [Score(0.0)] * 4, vote) == pytest.approx(1 / 3)


def test_vote_without_an_extractor_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"selection\.extractor must be set"):
        select_index([Candidate("a")], [Score(1.0)], SelectionConfig(rule="vote"))


# ------------------------------------------------------------------------- adaptive N


def numbered(message: str, index: int, request: GenerationRequest) -> str:
    """Candidate text from its child seed alone (as vLLM's seeded children), with an
    answer: children 0, 1, 2 answer 7, the rest answer by seed."""
    if quoted_response(message) is not None:
        return json.dumps({"instruction": "x"})
    child = child_seed(request, index) % (1 << 16)
    return f"the answer is {7 if child < 3 else child} (child {child})"


def test_adaptive_draws_the_same_candidates_and_stops_when_the_lead_is_clear() -> None:
    base = Config(scorer="length", generation=Config().generation.__class__(n=8))
    full = BestOfN(FakeEngine(numbered), config=base).select(["Pick."], ids=["q"])[0]
    rules = SelectionConfig(rule="vote", extractor=ANSWER, adaptive_round=3, adaptive_margin=0.9)
    engine = FakeEngine(numbered)
    adaptive = BestOfN(
        engine, config=Config(scorer="length", generation=base.generation, selection=rules)
    )
    (picked,) = adaptive.select(["Pick."], ids=["q"])
    # Round 1 draws children 0-2: all answer 7, a unanimous lead of 1.0 >= 0.9: stop.
    assert picked.rounds == 1 and len(picked.candidates) == 3
    assert [c.text for c in picked.candidates] == [c.text for c in full.candidates[:3]]
    assert [r.n for call in engine.calls for r in call] == [3]
    # A margin no round can reach draws all 8, in rounds of 3, 3 and 2, and they are the
    # candidates of a single draw of 8, in order.
    never = SelectionConfig(rule="argmax", adaptive_round=3, adaptive_margin=1e9)
    engine = FakeEngine(numbered)
    adaptive = BestOfN(
        engine, config=Config(scorer="length", generation=base.generation, selection=never)
    )
    (picked,) = adaptive.select(["Pick."], ids=["q"])
    assert picked.rounds == 3 and [r.n for call in engine.calls for r in call] == [3, 3, 2]
    assert [c.text for c in picked.candidates] == [c.text for c in full.candidates]
    assert picked.index == full.index


def test_run_with_vote_and_adaptive_end_to_end(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "q", "instruction": "Pick a number."}])
    config = tmp_path / "c.yaml"
    config.write_text(
        f"scorer: length\ngeneration:\n  n: 8\nselection:\n  rule: vote\n  extractor: '{ANSWER}'\n"
        "  adaptive_round: 3\n  adaptive_margin: 0.9\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    argv = ["run", str(source), "--config", str(config), "--output", str(out), "--no-cache"]
    assert main(argv, engine=FakeEngine(numbered)) == 0
    (record,) = [r for r in read_jsonl(out) if r["type"] == "result"]
    assert (record["drawn"], record["rounds"]) == (3, 1)
    assert "answer is 7" in record["selected_text"]


def test_brute_force_exhausts_tie_orders() -> None:
    # Every ordering of three candidates with answers a, a, b and equal scores: the vote
    # picks the first "a" wherever it stands.
    config = SelectionConfig(rule="vote", extractor=ANSWER)
    for order in itertools.permutations(["answer is a", "answer is a", "answer is b"]):
        index, _ = select_index([Candidate(t) for t in order], [Score(1.0)] * 3, config)
        assert order[index] == "answer is a" and index == order.index("answer is a")


def test_curve_follows_the_vote_rule_and_adaptive_n(tmp_path: Path) -> None:
    import csv

    write_jsonl(tmp_path / "items.jsonl", [{"id": "q", "instruction": "Pick a number."}])
    config = tmp_path / "curve.yaml"
    config.write_text(
        "scorer: length\n"
        f"selection:\n  rule: vote\n  extractor: '{ANSWER}'\n  adaptive_round: 2\n"
        "  adaptive_margin: 0.9\n"
        "curve:\n  instructions: items.jsonl\n  n_max: 4\n  lengths: [64]\n"
        "  scorers: [length]\n  quality: python:helpers:word_count\n"
        f"  output_dir: {tmp_path / 'out'}\n  bootstrap_resamples: 100\n",
        encoding="utf-8",
    )
    assert main(["curve", str(config), "--no-cache"], engine=FakeEngine(numbered)) == 0
    with (tmp_path / "out" / "curve.csv").open(encoding="utf-8") as handle:
        rows = {(r["scorer"], int(r["k"])): r for r in csv.DictReader(handle)}
    # Children 0 and 1 both answer 7: the first round of 2 is unanimous and stops, so
    # every k >= 2 draws 2 candidates, and k = 1 draws 1.
    assert [float(rows[("length", k)]["drawn"]) for k in (1, 2, 3, 4)] == [1.0, 2.0, 2.0, 2.0]
    assert [float(rows[("oracle_best", k)]["drawn"]) for k in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 4.0]


def test_adaptive_next_is_the_one_rule_of_a_run_and_a_curve() -> None:
    # Worked by hand, margin 0.1, rounds of 2, at most 5 candidates.
    config = SelectionConfig(adaptive_round=2, adaptive_margin=0.1)
    two = [Candidate("a"), Candidate("b")]
    assert adaptive_next(two, [Score(0.5), Score(0.45)], config, 5) == 4  # lead 0.05: more
    assert adaptive_next(two, [Score(0.5), Score(0.3)], config, 5) == 2  # lead 0.2: stop
    four = [*two, Candidate("c"), Candidate("d")]
    close = [Score(0.5), Score(0.45), Score(0.1), Score(0.0)]
    assert adaptive_next(four, close, config, 5) == 5  # one round more, capped at 5
    assert adaptive_next([*four, Candidate("e")], [*close, Score(0.0)], config, 5) == 5
    assert adaptive_next(two, [Score(0.5), Score(0.45)], SelectionConfig(), 5) == 2  # off


def test_curve_ties_selection_is_exactly_what_a_run_picks() -> None:
    # With tie_break and fallback first, the closed-form curve with tie rule "first" (what
    # curve.ties: selection uses) equals the average of select_index over every k-subset.
    from bestofn.analysis.best_of_k import curve_table, rule_table

    rng = random.Random(3)
    pools = []
    for _ in range(6):
        scores = [rng.choice([None, 0.0, 0.5, 0.5, 1.0]) for _ in range(5)]
        qualities = [float(rng.random() < 0.5) for _ in range(5)]
        pools.append((scores, qualities))
    closed = curve_table(pools, tie_rule="first", n_resamples=100)
    enumerated = rule_table(
        [
            (
                [Candidate(f"c{i}") for i in range(5)],
                [Score(v) if v is not None else Score.unscored("x") for v in scores],
                qualities,
            )
            for scores, qualities in pools
        ],
        SelectionConfig(),
        n_resamples=100,
    )
    assert [p.selector for p in closed] == pytest.approx([p.selector for p in enumerated])


def test_a_candidate_cut_to_a_length_keeps_what_fits() -> None:
    full = Candidate("one two three", 3, "stop", token_ids=(1, 2, 3), logprobs=(-1.0, -2.0, -3.0))
    assert full.at_length(3, lambda ids: "never") is full
    cut = full.at_length(2, lambda ids: " ".join(map(str, ids)))
    assert (cut.text, cut.num_tokens, cut.finish_reason) == ("1 2", 2, "length")
    assert (cut.token_ids, cut.logprobs) == ((1, 2), (-1.0, -2.0))
