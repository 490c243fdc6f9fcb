"""Gallery search with a deployed model: the top-k gallery crops of each query crop.

    python -m bench.extract GALLERY_FOLDER --exported DIR --out gallery.npz
    python -m bench.extract QUERY_FOLDER --exported DIR --out query.npz
    python -m bench.search --gallery gallery.npz --query query.npz [--top-k 10] [--re-rank]
        [--out DIR]

Both files are ``bench.extract`` outputs of the same network (``features``, ``paths``, ``method``,
``distance``). The gallery is ranked for each query with the distance the method ranks with
(``common.eval.search_gallery``; ties by gallery order), or, with ``--re-rank``, with k-reciprocal
re-ranking of query and gallery together (k1=20, k2=6, lambda=0.3 unless given; all queries are
re-ranked at once, as in an evaluation). The lists are printed; ``--out`` also writes one
ranked-list PNG per query (the query, then its top-k in grey frames, a folder of crops having no
identities to mark matches with, and their distances) and ``top_k.json`` with the same lists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common.data.dataset import DatasetError
from common.eval import METRICS, search_gallery
from common.eval.visualize import save_ranked_list
from common.files import atomic_write

__all__ = ["SearchError", "load_features", "search"]

RESULTS_FILE = "top_k.json"


class SearchError(ValueError):
    """Inputs that cannot be searched; the message names the problem and the fix."""


def load_features(path):
    """``(features (N, D) float32, paths, method, distance)`` of a ``bench.extract`` file."""
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"{path} does not exist; write it with python -m bench.extract IMAGES "
                          f"--exported DIR --out {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise SearchError(f"cannot read {path} as a .npz file ({err}); write it with "
                          f"python -m bench.extract") from None
    missing = {"features", "paths", "method", "distance"} - set(contents)
    if missing:
        raise SearchError(f"{path} lacks {', '.join(sorted(missing))}; it is not a "
                          f"bench.extract file (write one with python -m bench.extract)")
    features = contents["features"].astype(np.float32)
    paths = [str(p) for p in contents["paths"]]
    method, distance = str(contents["method"]), str(contents["distance"])
    if features.ndim != 2 or len(features) != len(paths):
        raise SearchError(f"{path} holds {features.shape} features for {len(paths)} paths; "
                          f"extract it again")
    if distance not in METRICS:
        raise SearchError(f"{path} names the distance {distance!r}, not one of "
                          f"{', '.join(METRICS)}; extract it again with this version")
    return features, paths, method, distance


def search(query_file, gallery_file, top_k=10, re_rank=None):
    """Returns ``(results, metric)``: for each query, ``{"query": path, "top_k": [{"path",
    "distance"}, ...]}`` nearest first."""
    q, q_paths, q_method, q_distance = load_features(query_file)
    g, g_paths, g_method, g_distance = load_features(gallery_file)
    if (q_method, q_distance) != (g_method, g_distance) or q.shape[1] != g.shape[1]:
        raise SearchError(f"{query_file} holds {q.shape[1]}-d {q_method} features ranked by "
                          f"{q_distance} but {gallery_file} holds {g.shape[1]}-d {g_method} "
                          f"features ranked by {g_distance}; extract both with the same model")
    if len(g) == 0:
        raise SearchError(f"{gallery_file} holds no image; extract a folder of gallery crops")
    index, dist = search_gallery(q, g, top_k, metric=q_distance, re_rank=re_rank)
    results = [{"query": q_paths[i],
                "top_k": [{"path": g_paths[j], "distance": float(d)}
                          for j, d in zip(index[i], dist[i])]}
               for i in range(len(q))]
    return results, q_distance


def write_ranked_lists(results, out_dir):
    """One ranked-list PNG per query (neutral frames, each distance written under its image)
    in ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, entry in enumerate(results):
        path = out_dir / f"{i:05d}_{Path(entry['query']).stem}.png"
        try:
            save_ranked_list(entry["query"], [hit["path"] for hit in entry["top_k"]], path,
                             captions=[f"{hit['distance']:.4g}" for hit in entry["top_k"]])
        except DatasetError as err:
            raise SearchError(f"{err} (--out draws the crops listed in the .npz files: run from "
                              f"where their paths lead, or leave --out out)") from None
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.search",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=Path, required=True, help="bench.extract .npz file")
    parser.add_argument("--query", type=Path, required=True, help="bench.extract .npz file")
    parser.add_argument("--top-k", type=int, default=10, help="list length (default 10)")
    parser.add_argument("--re-rank", nargs="*", type=float, default=None,
                        metavar="K1 K2 LAMBDA",
                        help="k-reciprocal re-ranking; alone for k1=20 k2=6 lambda=0.3")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the ranked-list PNGs and {RESULTS_FILE}")
    args = parser.parse_args(argv)
    if args.re_rank is None:
        re_rank = None
    elif len(args.re_rank) in (0, 3):
        re_rank = tuple(args.re_rank) or (20, 6, 0.3)
    else:
        parser.error("--re-rank takes no value (k1=20 k2=6 lambda=0.3) or three: K1 K2 LAMBDA")
    if args.top_k < 1:
        parser.error(f"--top-k must be >= 1, got {args.top_k}")
    try:
        results, metric = search(args.query, args.gallery, args.top_k, re_rank)
        how = f"{metric} distance" + (f", re-ranked (k1, k2, lambda) = {re_rank}" if re_rank
                                      else "")
        for entry in results:
            print(f"query {entry['query']} ({how})")
            for rank, hit in enumerate(entry["top_k"], 1):
                print(f"  {rank:3d}. {hit['distance']:.4f}  {hit['path']}")
        if args.out:
            written = write_ranked_lists(results, args.out)
            with atomic_write(args.out / RESULTS_FILE, "w") as handle:
                json.dump({"distance": metric, "re_rank": re_rank, "results": results}, handle,
                          indent=2)
            print(f"wrote {len(written)} ranked lists and {RESULTS_FILE} to {args.out}")
    except SearchError as err:
        sys.exit(f"bench.search: error: {err}")


if __name__ == "__main__":
    main()
