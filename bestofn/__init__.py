"""bestofn: best-of-N selection with FLIP (backward inference) as the reward.

The whole public surface is re-exported here; module layout is private.
"""

from bestofn.cache import ReconstructionCache
from bestofn.config import (
    Config,
    EngineConfig,
    FlipConfig,
    GenerationConfig,
    SelectionConfig,
    load_config,
)
from bestofn.engine import Completion, Engine, GenerationRequest
from bestofn.errors import (
    BestOfNError,
    ConfigError,
    EngineError,
    InputError,
    ModelError,
    OutputError,
)
from bestofn.flip import FlipScorer, parse_reply
from bestofn.likelihood import BackwardLikelihood, ForwardPMI
from bestofn.pipeline import BestOfN
from bestofn.registry import SCORER_NAMES, make_scorer
from bestofn.scorers import LengthScorer, RandomScorer, Scorer
from bestofn.select import select_index
from bestofn.selector import Selector
from bestofn.similarity import word_f1
from bestofn.types import Candidate, Score, Selection

__version__ = "0.1.0"

__all__ = [
    "SCORER_NAMES",
    "BackwardLikelihood",
    "BestOfN",
    "BestOfNError",
    "Candidate",
    "Completion",
    "Config",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "EngineError",
    "FlipConfig",
    "FlipScorer",
    "ForwardPMI",
    "GenerationConfig",
    "GenerationRequest",
    "InputError",
    "LengthScorer",
    "ModelError",
    "OutputError",
    "RandomScorer",
    "ReconstructionCache",
    "Score",
    "Scorer",
    "Selection",
    "SelectionConfig",
    "Selector",
    "__version__",
    "load_config",
    "make_scorer",
    "parse_reply",
    "select_index",
    "word_f1",
]
