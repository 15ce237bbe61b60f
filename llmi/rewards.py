"""Trainer rewards, where trainers import them: ``llmi.evaluation.rewards``."""

from llmi.evaluation.rewards import COMPONENTS, DocumentReward, compute_score, no_document

__all__ = ["COMPONENTS", "DocumentReward", "compute_score", "no_document"]
