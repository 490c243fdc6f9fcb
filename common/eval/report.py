"""Printing and saving evaluation results (ecosystem.md §7.7).

The printed block is torchreid's (mAP and Rank-k as percentages with one decimal) plus mINP and
the protocol; :func:`summary_line` is a one-line record of everything that changes the numbers.
"""

from __future__ import annotations

import json

import numpy as np

from common.files import atomic_write

__all__ = ["format_results", "format_run_table", "read_run_results", "results_to_dict", "run_results",
           "summary_line", "write_results_json", "write_run_results"]


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


RUN_TABLE_KEYS = (("mAP", "mAP"), ("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"),
                  ("rank20", "R20"), ("mINP", "mINP"))


def run_results(method, kind, epoch, all_results, datasets, retrieval=None, re_rank=False):
    """The results-file payload every method's run writes (one layout).

    Args:
        method: the method's name, e.g. "LAG-Net".
        kind: "best", "last", "before_training" (training) or "evaluate" (an evaluation-only
            run).
        epoch: epochs trained when evaluated (None if unknown).
        all_results: ``{target name: evaluate_rank result}`` in evaluation order.
        datasets: ``{target name: ReidDataset}`` (for the dataset name and set sizes).
        retrieval: the :class:`common.eval.Retrieval` convention used, recorded as a dict.
        re_rank: whether k-reciprocal re-ranking was applied.

    Returns:
        ``{"method", "kind", "epoch", "re_rank", "retrieval", "targets": {name: {"dataset",
        "num_query", "num_gallery", "mAP", "mINP", "rank1", ..., "cmc", "protocol",
        "num_valid_queries", "num_queries"}}}``; fractions, not percentages.
    """
    targets = {}
    for name, results in all_results.items():
        dataset = datasets[name]
        targets[name] = {"dataset": dataset.name, "num_query": len(dataset.query),
                         "num_gallery": len(dataset.gallery), **results_to_dict(results)}
    return {"method": method, "kind": kind, "epoch": epoch, "re_rank": bool(re_rank),
            "retrieval": None if retrieval is None else dict(vars(retrieval)),
            "targets": targets}


def write_run_results(path, payload):
    """Writes a :func:`run_results` payload as JSON, atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")


def read_run_results(path):
    with open(path) as handle:
        return json.load(handle)


def format_run_table(payload):
    """The table every method prints at the end of a run: one row per target, percentages,
    followed by a warning for each target where no query has a valid match."""
    epoch = "" if payload["epoch"] is None else f", epoch {payload['epoch']}"
    rerank = ", re-ranked" if payload.get("re_rank") else ""
    kind = payload["kind"].replace("_", " ")
    lines = [f"{payload['method']} ({kind}{epoch}{rerank})",
             f"{'target':<16} {'queries':>8} {'gallery':>8} "
             + " ".join(f"{label:>6}" for _, label in RUN_TABLE_KEYS)]
    warnings = []
    for name, row in payload["targets"].items():
        lines.append(f"{name:<16} {row['num_queries']:>8} {row['num_gallery']:>8} "
                     + " ".join(f"{100 * row[key]:6.1f}" if key in row else f"{'-':>6}"
                                for key, _ in RUN_TABLE_KEYS))
        if row["num_valid_queries"] == 0:
            warnings.append(f"warning: on {name} no query has a valid match in the gallery, so "
                            f"every number is 0. Check that query and gallery share identities "
                            f"on different cameras.")
        elif row["num_valid_queries"] < row["num_queries"]:
            warnings.append(f"note: on {name} {row['num_queries'] - row['num_valid_queries']} of "
                            f"{row['num_queries']} queries have no valid match ("
                            + ("counted as 0 under the market protocol)"
                               if row["protocol"] == "market" else "left out of the means)"))
    return "\n".join(lines + warnings)
