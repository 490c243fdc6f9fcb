"""Evaluation shared by the five methods: distances, ranking metrics, re-ranking, reports."""

from common.eval.distance import METRICS, compute_distance_matrix
from common.eval.features import (NonFiniteFeaturesError, Retrieval, extract_features,
                                  tracklet_features)
from common.eval.rank import PROTOCOLS, evaluate_rank
from common.eval.report import format_results, summary_line, write_results_json
from common.eval.rerank import re_ranking
from common.eval.visualize import visualize_ranked_results

__all__ = ["METRICS", "NonFiniteFeaturesError", "PROTOCOLS", "Retrieval", "compute_distance_matrix",
           "evaluate_rank", "extract_features", "format_results", "re_ranking", "summary_line",
           "tracklet_features", "visualize_ranked_results", "write_results_json"]
