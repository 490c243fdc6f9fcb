"""Evaluation shared by the five methods: distances, ranking metrics, re-ranking, reports."""

from common.eval.distance import METRICS, compute_distance_matrix, distance_blocks
from common.eval.evaluate import evaluate_features, search_gallery
from common.eval.features import (NonFiniteFeaturesError, Retrieval, extract_features,
                                  tracklet_features)
from common.eval.rank import PROTOCOLS, evaluate_rank
from common.eval.report import format_results, summary_line, write_results_json
from common.eval.rerank import re_ranking, re_ranking_features
from common.eval.visualize import visualize_ranked_results

__all__ = ["METRICS", "NonFiniteFeaturesError", "PROTOCOLS", "Retrieval", "compute_distance_matrix",
           "distance_blocks", "evaluate_features", "evaluate_rank", "extract_features",
           "format_results", "re_ranking", "re_ranking_features", "search_gallery",
           "summary_line", "tracklet_features", "visualize_ranked_results", "write_results_json"]
