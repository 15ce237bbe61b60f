"""The judge: LLM-I's hybrid reward of a document, and the judge models' checks.

``scoring`` holds the rule scores, the reward, the ranking and the ``Judge`` that asks
the text and vision judges; ``prompts`` holds what the judges are asked. Test-time
scaling's nodes, the verifier, the evaluation's scorers and the trainer rewards all use it.
"""

from llmi.judge.scoring import (
    TEXT_KEYS,
    VISION_KEYS,
    Judge,
    RewardRules,
    RewardWeights,
    Scores,
    rank,
    reward,
)

__all__ = [
    "TEXT_KEYS", "VISION_KEYS", "Judge", "RewardRules", "RewardWeights", "Scores", "rank", "reward",
]
