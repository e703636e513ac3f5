"""bestofn: best-of-N selection with FLIP (backward inference) as the reward.

The whole public surface is re-exported here; module layout is private.
"""

from bestofn.config import (
    Config,
    EngineConfig,
    FlipConfig,
    GenerationConfig,
    JudgeConfig,
    LikelihoodConfig,
    SelectionConfig,
    load_config,
)
from bestofn.engines import open_engine, open_scoring_engine
from bestofn.engines.base import Completion, Engine, GenerationRequest
from bestofn.engines.fake import FakeEngine
from bestofn.errors import (
    BestOfNError,
    ConfigError,
    EngineError,
    InputError,
    ItemError,
    ModelError,
    OutputError,
)
from bestofn.pipeline import BestOfN, RunStats, Selector, Task
from bestofn.rewards import FlipReward, configure_flip_reward, flip_reward
from bestofn.scorers import (
    SCORER_NAMES,
    SCORERS,
    LengthScorer,
    RandomScorer,
    Scorer,
    ScorerEntry,
    make_scorer,
)
from bestofn.scorers.cache import ReconstructionCache
from bestofn.scorers.flip import FlipScorer
from bestofn.scorers.judge import PairwiseJudge, PointwiseJudge
from bestofn.scorers.likelihood import BackwardLikelihood, ForwardPMI
from bestofn.scorers.replies import parse_reply
from bestofn.scorers.similarity import word_f1
from bestofn.selection import select_index
from bestofn.values import Candidate, Failure, Score, Selection

__version__ = "0.1.0"

__all__ = [
    "SCORERS",
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
    "Failure",
    "FakeEngine",
    "FlipConfig",
    "FlipReward",
    "FlipScorer",
    "ForwardPMI",
    "GenerationConfig",
    "GenerationRequest",
    "InputError",
    "ItemError",
    "JudgeConfig",
    "LengthScorer",
    "LikelihoodConfig",
    "ModelError",
    "OutputError",
    "PairwiseJudge",
    "PointwiseJudge",
    "RandomScorer",
    "ReconstructionCache",
    "RunStats",
    "Score",
    "Scorer",
    "ScorerEntry",
    "Selection",
    "SelectionConfig",
    "Selector",
    "Task",
    "__version__",
    "configure_flip_reward",
    "flip_reward",
    "load_config",
    "make_scorer",
    "open_engine",
    "open_scoring_engine",
    "parse_reply",
    "select_index",
    "word_f1",
]
