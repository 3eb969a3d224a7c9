"""RULER-style relative judging of trajectory groups: pure logic, no Dagster.

A judge scores each group's trajectories against one another (`OpenAIJudge` over any
OpenAI-compatible endpoint, `HeuristicJudge` from outcomes alone), `CachedJudge` remembers scored
groups in the object store, and `group_training_rewards` blends judge scores with outcomes.
"""

from babylon_pipeline.ruler.blend import DEFAULT_JUDGE_WEIGHT, group_training_rewards, training_reward
from babylon_pipeline.ruler.cache import ByteStore, CachedJudge, JudgmentCache, content_hash
from babylon_pipeline.ruler.fitting import fit_prompts
from babylon_pipeline.ruler.heuristic import HEURISTIC_MODEL, HeuristicJudge
from babylon_pipeline.ruler.judge import Judge, OnJudged
from babylon_pipeline.ruler.limits import JudgeLimits
from babylon_pipeline.ruler.openai_judge import OpenAIJudge
from babylon_pipeline.ruler.prompt import JudgePrompt, build_prompt, shared_prefix_length
from babylon_pipeline.ruler.response import JudgeResponseError, parse_scores, response_format
from babylon_pipeline.ruler.rubrics import BABYLON_TRADING, GENERAL, RUBRICS, Rubric, UnknownRubric, get_rubric
from babylon_pipeline.ruler.scaling import scale_within_group
from babylon_pipeline.ruler.summary import JudgeRunSummary, summarize
from babylon_pipeline.ruler.types import GroupJudgment, JudgeGroup, JudgeStatus, JudgeTrajectory, TrajectoryScore

__all__ = [
    "BABYLON_TRADING",
    "DEFAULT_JUDGE_WEIGHT",
    "GENERAL",
    "HEURISTIC_MODEL",
    "RUBRICS",
    "ByteStore",
    "CachedJudge",
    "GroupJudgment",
    "HeuristicJudge",
    "Judge",
    "JudgeGroup",
    "JudgeLimits",
    "JudgePrompt",
    "JudgeResponseError",
    "JudgeRunSummary",
    "JudgeStatus",
    "JudgeTrajectory",
    "JudgmentCache",
    "OnJudged",
    "OpenAIJudge",
    "Rubric",
    "TrajectoryScore",
    "UnknownRubric",
    "build_prompt",
    "content_hash",
    "fit_prompts",
    "get_rubric",
    "group_training_rewards",
    "parse_scores",
    "response_format",
    "scale_within_group",
    "shared_prefix_length",
    "summarize",
    "training_reward",
]
