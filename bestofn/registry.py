"""Scorers by name: the one place that turns ``--scorer flip,judge,...`` into objects.

Answers a typo with a did-you-mean; builds only what the names ask for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bestofn.cache import ReconstructionCache
from bestofn.config import SCORERS, Config
from bestofn.engine import Engine
from bestofn.scorers import LengthScorer, RandomScorer, Scorer, check_scorer_names

SCORER_NAMES = SCORERS
"""flip: FLIP word F1; judge: same-model 1-10 rating; pairwise: same-model A/B judging in
both orders (win rate); length: longer wins; random: seeded chance; oracle: IFEval
verifiable constraints (needs instruction_id_list and kwargs in the input);
backward_ll / backward_ll_sum: teacher-forced log P(instruction | response), per token or
summed; forward_pmi: per-token PMI of the response with its instruction; pmi_matched: the
same PMI over a window of equal length for every candidate of an instruction."""

LIKELIHOOD_SCORERS = frozenset({"backward_ll", "backward_ll_sum", "forward_pmi", "pmi_matched"})
"""The teacher-forced scorers: the ``likelihood`` config section sets them."""

ENGINE_SCORERS = frozenset({"flip", "judge", "pairwise"}) | LIKELIHOOD_SCORERS


def parse_scorer_names(text: str) -> list[str]:
    """``"flip, judge"`` -> ["flip", "judge"], checked against SCORER_NAMES."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        from bestofn.errors import ConfigError

        raise ConfigError(
            f"--scorer must name at least one of {', '.join(SCORER_NAMES)}, got {text!r}"
        )
    check_scorer_names(names, SCORER_NAMES)
    return list(dict.fromkeys(names))


def needs_engine(names: Sequence[str]) -> bool:
    return any(n in ENGINE_SCORERS for n in names)


def make_scorer(
    name: str,
    *,
    engine: Engine | None,
    config: Config,
    cache: ReconstructionCache | None = None,
    oracle_records: Mapping[str, Mapping[str, Any]] | None = None,
) -> Scorer:
    """Build one scorer; engine scorers share the given engine and cache."""
    check_scorer_names([name], SCORER_NAMES)
    if name == "length":
        return LengthScorer()
    if name == "random":
        return RandomScorer(seed=config.generation.seed)
    if name == "oracle":
        from bestofn.oracle import IFEvalOracle

        return IFEvalOracle(oracle_records or {})
    if engine is None:
        raise ValueError(f"scorer {name!r} needs an engine")
    if name == "flip":
        from bestofn.flip import FlipScorer

        return FlipScorer(engine, config.flip, config_source=config.source, cache=cache)
    if name in ("backward_ll", "backward_ll_sum"):
        from bestofn.config import resolve_config_path
        from bestofn.flip import load_template
        from bestofn.likelihood import BackwardLikelihood

        lk = config.likelihood
        return BackwardLikelihood(
            engine,
            reduce="mean" if name == "backward_ll" else "sum",
            template=load_template(
                resolve_config_path(lk.template, config.source, "likelihood.template"),
                "likelihood.template",
            ),
            max_response_tokens=lk.max_response_tokens,
            max_instruction_tokens=lk.max_instruction_tokens,
            echo_penalty=lk.echo_penalty,
        )
    if name in ("forward_pmi", "pmi_matched"):
        from bestofn.likelihood import ForwardPMI

        return ForwardPMI(
            engine,
            window="all" if name == "forward_pmi" else "matched",
            max_response_tokens=config.likelihood.max_response_tokens,
            max_instruction_tokens=config.likelihood.max_instruction_tokens,
            echo_penalty=config.likelihood.echo_penalty,
        )
    from bestofn.judge import PairwiseJudge, PointwiseJudge

    if name == "judge":
        return PointwiseJudge(engine, cache=cache)
    return PairwiseJudge(engine, cache=cache)
