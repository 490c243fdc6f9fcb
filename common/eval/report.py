"""Printing and saving evaluation results (ecosystem.md §7.7).

The printed block is torchreid's (mAP and Rank-k as percentages with one decimal) plus mINP and
the protocol; :func:`summary_line` is a one-line record of everything that changes the numbers.
"""

from __future__ import annotations

import json

import numpy as np

from common.files import atomic_write

__all__ = ["format_results", "summary_line", "results_to_dict", "write_results_json"]


def format_results(results, ranks=(1, 5, 10, 20)):
    """The torchreid-style block for one :func:`common.eval.evaluate_rank` result."""
    cmc = np.asarray(results["cmc"])
    lines = ["** Results **",
             f"protocol: {results['protocol']} "
             f"({results['num_valid_queries']}/{results['num_queries']} queries with a valid match)",
             f"mAP: {100 * results['mAP']:.1f}%",
             f"mINP: {100 * results['mINP']:.1f}%",
             "CMC curve"]
    lines += [f"Rank-{r:<3d}: {100 * cmc[r - 1]:.1f}%" for r in ranks if r <= len(cmc)]
    if results["num_valid_queries"] == 0:
        lines.append("warning: no query has a valid match in the gallery; every number is 0. "
                     "Check that query and gallery share identities on different cameras.")
    return "\n".join(lines)


def summary_line(results, dataset, num_query, num_gallery, **settings):
    """One line naming the data, the settings that change the numbers, and the numbers."""
    cmc = np.asarray(results["cmc"])
    setting = " ".join(f"{key}={value}" for key, value in settings.items())
    ranks = " ".join(f"R{r} {100 * cmc[r - 1]:.1f}" for r in (1, 5, 10) if r <= len(cmc))
    return (f"{dataset} | q={num_query} g={num_gallery} | {setting} protocol={results['protocol']}"
            f" | {ranks} mAP {100 * results['mAP']:.1f} mINP {100 * results['mINP']:.1f}")


def results_to_dict(results, ranks=(1, 3, 5, 10, 20)):
    """JSON-ready view: fractions, the CMC curve and Rank-k entries; no per-query arrays."""
    cmc = np.asarray(results["cmc"], dtype=float)
    out = {"mAP": float(results["mAP"]), "mINP": float(results["mINP"]),
           "num_valid_queries": int(results["num_valid_queries"]),
           "num_queries": int(results["num_queries"]), "protocol": results["protocol"],
           "cmc": [float(x) for x in cmc]}
    out.update({f"rank{r}": float(cmc[r - 1]) for r in ranks if r <= len(cmc)})
    return out


def write_results_json(path, results, **context):
    """Writes ``results`` (plus any context: dataset, settings, epoch, ...) atomically."""
    payload = dict(context)
    payload["results"] = results_to_dict(results)
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
