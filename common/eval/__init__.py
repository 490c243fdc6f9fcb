"""Evaluation shared by the five methods: distances, ranking metrics, re-ranking, reports."""

from common.eval.rank import PROTOCOLS, evaluate_rank
from common.eval.rerank import re_ranking

__all__ = ["PROTOCOLS", "evaluate_rank", "re_ranking"]
