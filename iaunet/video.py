"""The video half of IAUnet's run (``-d mars``, ``ilidsvid``, ``prid2011``, ``dukemtmcvidreid``):
the flags, the clip loaders and the tracklet evaluation, as plain functions that
``iaunet/trainer.py`` routes to (``../shared/specs/iaunet.md`` §3.5); the network is
``iaunet.model.VideoIAUnet`` (``build_model(arch="iaunet_video")``).

The released code has the spatial-temporal block but no video backbone, data path or script; the
choices below are the image recipe's where one exists (sampler, transforms, losses, heads, test
distance) and, for the temporal parts, those of the authors' video code of the same period
(``blue-blue272/VideoReID-TCLNet``, ECCV 2020; ``BiCnet-TKS``, CVPR 2021), named in
``iaunet/README.md``:

- training: one clip of ``--seq-len`` frames per tracklet, restricted random sampling
  (``--sample-method rrs``) or the authors' strided random crop (``stride``,
  ``--sample-stride``); the same flip and erased rectangle for every frame of a clip; the image
  recipe's chunk-shuffled identity batches, now of tracklets (the sampler of the authors' video
  code is the same rule); CE-LS + cosine triplet on the post-BN clip feature (no part masks
  exist for video frames here, so no mask loss);
- test: every frame in chunks of ``--seq-len`` (``--test-sample all``, the authors'
  ``test_all_frames``) or one clip of evenly spaced frames (``evenly``); a tracklet's feature is
  the mean of its clip features; the gallery holds the query tracklets the dataset puts there
  (MARS: all of them, the official protocol), their features computed once.

The training step itself is the image one: the loader yields ``(clips, pids, camids)``, the
network takes clips, and :class:`iaunet.loss.IAUnetLoss` takes its outputs as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.data import ClipDataset, ClipTransform, build_video_dataset
from common.data.transforms import CIFAR_MEAN
from common.eval import (compute_distance_matrix, evaluate_rank, extract_features,
                         format_results, tracklet_features)
from common.runtime import OptionError
from iaunet.loss import DISTANCES
from iaunet.sampler import ChunkShuffleSampler

__all__ = ["GalleryClips", "VIDEO_DATASETS", "add_video_flags", "build_video_loaders",
           "check_video_options", "evaluate_tracklets", "is_video", "load_video_dataset"]

log = logging.getLogger(__name__)

# -d name -> common.data.video parser
VIDEO_DATASETS = {"mars": "mars", "ilidsvid": "ilidsvid", "prid2011": "prid2011",
                  "dukemtmcvidreid": "dukemtmcvidreid"}


def add_video_flags(parser):
    """The video flags of ``iaunet/main.py`` (in the original ``train.py`` style)."""
    group = parser.add_argument_group(f"video (-d {', '.join(VIDEO_DATASETS)})")
    group.add_argument("--seq-len", type=int, default=4,
                       help="frames per clip, in training and in each test chunk")
    group.add_argument("--sample-method", type=str, default="rrs", choices=("rrs", "stride"),
                       help="training clip: restricted random sampling, or a random start "
                            "with --sample-stride (the authors' video code)")
    group.add_argument("--sample-stride", type=int, default=8, help="frame step of 'stride'")
    group.add_argument("--test-sample", type=str, default="all", choices=("all", "evenly"),
                       help="test: every frame in chunks of --seq-len, or one evenly spaced clip")
    group.add_argument("--min-frames", type=int, default=0,
                       help="prid2011: keep identities whose two tracklets have this many frames")
    return group


def is_video(args):
    return args.dataset in VIDEO_DATASETS


def check_video_options(args):
    """Raises :class:`OptionError` for flags that do not apply to video (no-op for images)."""
    if not is_video(args):
        return
    if args.arch != "IAUnet":
        raise OptionError(f"-a {args.arch}: only IAUnet has a video network (-d {args.dataset})")
    if args.seq_len < 1 or args.sample_stride < 1:
        raise OptionError(f"--seq-len ({args.seq_len}) and --sample-stride "
                          f"({args.sample_stride}) must be >= 1")
    if args.use_metric_cuhk03:
        raise OptionError("--use-metric-cuhk03 is an image protocol; video uses the standard one")


def load_video_dataset(args):
    options = {}
    if args.dataset in ("ilidsvid", "prid2011"):
        options["split_id"] = args.split_id
    if args.dataset == "prid2011":
        options["min_frames"] = args.min_frames
    return build_video_dataset(VIDEO_DATASETS[args.dataset], args.root, **options)


@dataclass
class GalleryClips:
    """The gallery's clip loader over the gallery tracklets that are not queries, and the query
    rows whose tracklets are also in the gallery (their features are reused, placed first)."""

    loader: DataLoader
    query_rows: np.ndarray


def build_video_loaders(args, dataset, distributed, pin_memory):
    """``(train loader or None for --evaluate, query loader, GalleryClips)``."""
    options = {"num_workers": args.workers, "pin_memory": pin_memory}
    test_transform = ClipTransform(args.height, args.width)

    def clips(tracklets):
        return DataLoader(ClipDataset(tracklets, args.seq_len, args.test_sample, test_transform),
                          batch_size=args.test_batch, **options)

    query_row = {tracklet: row for row, tracklet in enumerate(dataset.query)}
    shared = [query_row[t] for t in dataset.gallery if t in query_row]
    gallery = GalleryClips(clips([t for t in dataset.gallery if t not in query_row]),
                           np.asarray(shared, dtype=np.int64))
    if args.evaluate:
        return None, clips(dataset.query), gallery
    sampler = ChunkShuffleSampler([t.pid for t in dataset.train], args.train_batch,
                                  args.num_instances, seed=args.seed,
                                  num_replicas=distributed.world_size, rank=distributed.rank)
    train_set = ClipDataset(dataset.train, args.seq_len, args.sample_method,
                            ClipTransform(args.height, args.width, flip=0.5, erasing=0.5,
                                          erasing_mean=CIFAR_MEAN),
                            stride=args.sample_stride)
    train_loader = DataLoader(train_set, batch_sampler=sampler, **options)
    if len(train_loader) == 0:
        raise OptionError(f"the training set ({len(dataset.train)} tracklets) gives no full "
                          f"batch of --train-batch {args.train_batch}; lower it")
    log.warning("video: no part masks for video frames, training WITHOUT the mask loss (the part "
                "maps are unsupervised)")
    return train_loader, clips(dataset.query), gallery


def _tracklet_features(model, loader, args, device, progress, desc):
    clip_features, _, _ = extract_features(model, loader, device=device,
                                           flip=args.flip_cnt == 2, normalize=False,
                                           amp=args.amp, progress=progress, desc=desc)
    dataset = loader.dataset
    features = tracklet_features(clip_features, dataset.tracklet_of_clip, len(dataset.tracklets))
    pids = np.array([t.pid for t in dataset.tracklets], dtype=np.int64)
    camids = np.array([t.camid for t in dataset.tracklets], dtype=np.int64)
    return features, pids, camids


def evaluate_tracklets(model, query_loader, gallery, args, device, progress=True):
    """Tracklet features (the mean of clip features), then the query x gallery ranking of
    ``common.eval`` (cosine for the default ``consine``, squared Euclidean otherwise)."""
    qf, q_pids, q_camids = _tracklet_features(model, query_loader, args, device, progress,
                                              "query clips")
    rest, g_pids, g_camids = _tracklet_features(model, gallery.loader, args, device, progress,
                                                "gallery clips")
    shared = qf[torch.as_tensor(gallery.query_rows)]
    gf = torch.cat([shared, rest]) if len(rest) else shared
    g_pids = np.concatenate([q_pids[gallery.query_rows], g_pids])
    g_camids = np.concatenate([q_camids[gallery.query_rows], g_camids])
    metric = "cosine" if DISTANCES[args.distance] == "cosine" else "sqeuclidean"
    results = evaluate_rank(compute_distance_matrix(qf, gf, metric), q_pids, g_pids, q_camids,
                            g_camids)
    log.info(f"{len(q_pids)} query x {len(g_pids)} gallery tracklets\n{format_results(results)}")
    return results
