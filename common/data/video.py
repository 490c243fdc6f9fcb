"""Video re-ID data: tracklet parsers (MARS, iLIDS-VID, PRID-2011, DukeMTMC-VideoReID), the
temporal sampling of clips, and a clip dataset.

A tracklet is an ordered tuple of frame paths with one identity and one 0-based camera
(:class:`Tracklet`). Each ``load_*`` takes the dataset root (the extracted folder, or a parent
holding it under its usual name) and returns a :class:`VideoReidDataset` of tracklets: ``train``
with identities relabelled ``0..N-1``, ``query`` and ``gallery`` keeping the dataset's ids (in
MARS, -1 is junk and 0 a distractor, as in the official evaluation
``liangzheng06/MARS-evaluation`` ``utils/evaluation_mars.m``: pid -1 and same identity + same
camera are junk, pid 0 is an ordinary negative; ``common.eval.evaluate_rank`` applies exactly
these rules).

The identity samplers of :mod:`common.data.sampler` take one identity per dataset index, so given
``[t.pid for t in dataset.train]`` they draw P x K *tracklets* under the same rules (and the same
DDP split) as they draw images.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from common.data.dataset import DatasetError, ReidDataset, find_root, list_images
from common.data.datasets import _split_ids
from common.data.images import read_image
from common.data.transforms import (CIFAR_MEAN, IMAGENET_MEAN, IMAGENET_STD, INTERPOLATION,
                                    RandomErasing)

__all__ = ["CLIP_SAMPLINGS", "ClipDataset", "ClipTransform", "MARS_INFO_FILES", "Tracklet",
           "VIDEO_DATASETS", "VideoReidDataset", "build_video_dataset", "chunk_indices",
           "evenly_spaced_indices", "load_dukemtmc_videoreid", "load_ilidsvid", "load_mars",
           "load_prid2011", "random_stride_indices", "restricted_random_indices"]

MARS_INFO_FILES = ("train_name.txt", "test_name.txt", "tracks_train_info.mat",
                   "tracks_test_info.mat", "query_IDX.mat")
# "0001C1T0001F001.jpg": identity (4 digits, "00-1" for junk), camera, tracklet, frame.
MARS_NAME = re.compile(r"^(\d{4}|00-1)C(\d)T(\d+)F(\d+)\.jpg$")
# DukeMTMC-VideoReID: "0001_C6_F0099_X30823.jpg" (current release) or "0001C6F0099X30823.jpg".
DUKE_VIDEO_NAME = re.compile(r"^\d+_?C(\d+)_?F", re.IGNORECASE)


@dataclass(frozen=True)
class Tracklet:
    paths: tuple
    pid: int
    camid: int


@dataclass
class VideoReidDataset(ReidDataset):
    """Train / query / gallery lists of :class:`Tracklet`; ``notes`` say how it was read."""

    notes: list = field(default_factory=list)

    def summary(self):
        lines = [f"=> {self.name} loaded from {self.root}",
                 "  ------------------------------------------------------",
                 "  subset   | # ids | # tracklets | # frames | # cameras",
                 "  ------------------------------------------------------"]
        for subset in ("train", "query", "gallery"):
            tracklets = getattr(self, subset)
            frames = sum(len(t.paths) for t in tracklets)
            ids, cameras = len({t.pid for t in tracklets}), len({t.camid for t in tracklets})
            lines.append(f"  {subset:<8} | {ids:5d} | {len(tracklets):11d} | {frames:8d} | "
                         f"{cameras:9d}")
        lines.append("  ------------------------------------------------------")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _relabel(tracklets):
    label = {pid: i for i, pid in enumerate(sorted({t.pid for t in tracklets}))}
    return [replace(t, pid=label[t.pid]) for t in tracklets]


# ----------------------------------------------------------------------------------------- MARS

def load_mars(root, keep_junk=False):
    """MARS: ``bbox_train/PPPP/*.jpg``, ``bbox_test/PPPP/*.jpg`` and, in the official layout,
    ``info/`` (:data:`MARS_INFO_FILES`, from ``liangzheng06/MARS-evaluation``).

    With ``info/``: 8,298 train tracklets (625 ids), the 1,980 query rows of ``query_IDX.mat``,
    and as gallery every test tracklet (12,180, the query ones included, as the official
    ``test_mars.m`` ranks them: a query's own tracklet is junk for it). Without ``info/`` (a
    subset such as ``mars_mini``) tracklets are read from the file names ``PPPPCcTttttFfff.jpg``,
    and the query is the official rule, which reproduces ``query_IDX.mat`` exactly on the full
    dataset: the last tracklet of every identity (pid >= 1) in every camera, for identities seen
    by two cameras or more. The dataset's ``notes`` say which way it was read.

    Gallery tracklets with pid -1 (junk) are dropped unless ``keep_junk``; the evaluator treats
    -1 as junk either way, so both give the same numbers. pid 0 (distractors) stays.
    """
    folder = find_root(root, "mars", ("bbox_train", "bbox_test"), ("", "MARS", "mars"))
    info = folder / "info"
    if info.is_dir():
        missing = [name for name in MARS_INFO_FILES if not (info / name).is_file()]
        if missing:
            raise DatasetError(f"mars: {info} lacks {', '.join(missing)}; copy the whole info/ "
                               f"folder of liangzheng06/MARS-evaluation, or remove {info} to "
                               f"read the tracklets from the file names")
        dataset = _mars_from_info(folder)
    else:
        dataset = _mars_from_names(folder)
    if not keep_junk:
        dataset.gallery = [t for t in dataset.gallery if t.pid != -1]
    return dataset


def _frame_folder(folder, split):
    """``bbox_train/`` (or ``bbox_train/bbox_train/``, as some archives extract)."""
    nested = folder / split / split
    return nested if nested.is_dir() else folder / split


def _mars_from_info(folder):
    import scipy.io

    info = folder / "info"

    def table(name, key):
        try:
            return np.asarray(scipy.io.loadmat(info / name)[key])
        except (KeyError, ValueError, OSError) as err:
            raise DatasetError(f"mars: {info / name} is not the official MATLAB file with "
                               f"'{key}' ({err}); copy it again from MARS-evaluation/info")

    train_rows = table("tracks_train_info.mat", "track_train_info").astype(np.int64)
    test_rows = table("tracks_test_info.mat", "track_test_info").astype(np.int64)
    query_rows = table("query_IDX.mat", "query_IDX").ravel().astype(np.int64) - 1
    train = _tracklets_from_rows(folder, "bbox_train", (info / "train_name.txt"), train_rows)
    test = _tracklets_from_rows(folder, "bbox_test", (info / "test_name.txt"), test_rows)
    if query_rows.min() < 0 or query_rows.max() >= len(test):
        raise DatasetError(f"mars: query_IDX.mat indexes rows 1..{query_rows.max() + 1} but "
                           f"tracks_test_info.mat has {len(test)}; the info files do not match")
    train = [t for t in train if t.pid >= 1]
    return VideoReidDataset("mars", folder, _relabel(train), [test[i] for i in query_rows], test,
                            notes=["official protocol from info/ (query_IDX.mat; gallery = "
                                   "every test tracklet, queries included)"])


def _tracklets_from_rows(folder, split, names_file, rows):
    """Tracklets of ``rows`` = [first frame, last frame, pid, camera] (1-based frame rows of
    ``names_file``); every frame name must carry the row's identity and camera."""
    names = names_file.read_text().split()
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise DatasetError(f"mars: the track table for {split} has shape {rows.shape}, expected "
                           f"(tracklets, 4)")
    if rows[:, 1].max() > len(names):
        raise DatasetError(f"mars: the track table for {split} reaches frame "
                           f"{rows[:, 1].max()} but {names_file} lists {len(names)}; the info "
                           f"files do not match")
    frames = str(_frame_folder(folder, split))
    tracklets = []
    for start, end, pid, cam in rows.tolist():
        frame_names = names[start - 1:end]
        prefix = f"{'00-1' if pid == -1 else f'{pid:04d}'}C{cam}"
        if {name[:len(prefix)] for name in frame_names} != {prefix}:
            raise DatasetError(f"mars: frames {start}-{end} of {names_file} are not all "
                               f"'{prefix}...' (pid {pid}, camera {cam}): the name list and the "
                               f"track table do not match")
        tracklets.append(Tracklet(tuple(f"{frames}/{name[:4]}/{name}" for name in frame_names),
                                  pid, cam - 1))
    if tracklets and not Path(tracklets[0].paths[0]).is_file():
        raise DatasetError(f"mars: {tracklets[0].paths[0]} (the first frame listed in "
                           f"{names_file.name}) does not exist; extract {split}.zip into {folder}")
    return tracklets


def _mars_from_names(folder):
    train = [t for t in _mars_split_from_names(folder, "bbox_train") if t.pid >= 1]
    test = _mars_split_from_names(folder, "bbox_test")
    if not train:
        raise DatasetError(f"mars: no labelled training tracklet (pid >= 1) in "
                           f"{_frame_folder(folder, 'bbox_train')}")
    return VideoReidDataset("mars", folder, _relabel(train), _mars_query_rule(test), test,
                            notes=["no info/ folder: tracklets from the file names, query = the "
                                   "last tracklet of each identity in each camera (identities "
                                   "seen by 2+ cameras), gallery = every test tracklet"])


def _mars_split_from_names(folder, split):
    frames = _frame_folder(folder, split)
    images = list_images(frames, recursive=True)
    if not images:
        raise DatasetError(f"mars: no frame in {frames}; extract {split}.zip there "
                           f"(bbox_xxx/PPPP/PPPPCcTttttFfff.jpg)")
    groups, bad = defaultdict(list), []
    for path in images:
        match = MARS_NAME.match(path.name)
        if match is None:
            bad.append(path.name)
            continue
        pid = -1 if match.group(1) == "00-1" else int(match.group(1))
        key = (pid, int(match.group(2)), int(match.group(3)))
        groups[key].append((int(match.group(4)), str(path)))
    if bad:
        raise DatasetError(f"mars: {len(bad)} file name(s) in {frames} are not "
                           f"'PPPPCcTttttFfff.jpg', e.g. {', '.join(bad[:5])}; rename or remove "
                           f"them")
    return [Tracklet(tuple(path for _, path in sorted(groups[key])), key[0], key[1] - 1)
            for key in sorted(groups)]


def _mars_query_rule(test):
    """The last tracklet (in (identity, camera, tracklet) order) of each identity >= 1 in each
    camera, for identities seen by two cameras or more: the rule behind ``query_IDX.mat``."""
    last = {}
    for tracklet in test:  # sorted by (pid, camera, tracklet number)
        if tracklet.pid >= 1:
            last[(tracklet.pid, tracklet.camid)] = tracklet
    cameras = Counter(pid for pid, _ in last)
    return [t for (pid, _), t in last.items() if cameras[pid] >= 2]


# ------------------------------------------------------------------ iLIDS-VID, PRID-2011, Duke

def load_ilidsvid(root, split_id=0):
    """iLIDS-VID: ``i-LIDS-VID/sequences/cam{1,2}/personNNN/*.png``, 300 identities, one
    tracklet per identity and camera.

    Split ``split_id`` (0-9) draws half of the identities for training with a seeded generator
    (the image parsers' seed); the test identities' camera-1 tracklets are the query and their
    camera-2 tracklets the gallery. (The official ``train_test_splits_ilidsvid.mat`` is not read.)
    """
    folder = find_root(root, "ilidsvid", ("sequences/cam1", "sequences/cam2"),
                       ("", "i-LIDS-VID", "iLIDS-VID", "ilids-vid/i-LIDS-VID"))
    cameras = [_person_tracklets(folder / "sequences" / cam, camid, "ilidsvid")
               for camid, cam in enumerate(("cam1", "cam2"))]
    return _two_camera_split("ilidsvid", folder, cameras, split_id)


def load_prid2011(root, split_id=0, min_frames=0):
    """PRID-2011 multi-shot: ``prid_2011/multi_shot/cam_{a,b}/person_NNNN/*.png``.

    Only the identities seen by both cameras (person_0001-0200) are used, and of those only the
    ones whose two tracklets have at least ``min_frames`` frames. Split ``split_id`` (0-9) draws
    half of them for training (seeded); query = camera A, gallery = camera B of the others.
    """
    folder = find_root(root, "prid2011", ("multi_shot/cam_a", "multi_shot/cam_b"),
                       ("", "prid_2011", "PRID2011", "prid2011"))
    cameras = [_person_tracklets(folder / "multi_shot" / cam, camid, "prid2011")
               for camid, cam in enumerate(("cam_a", "cam_b"))]
    both = set(cameras[0]) & set(cameras[1])
    keep = {pid for pid in both if min(len(cam[pid].paths) for cam in cameras) >= min_frames}
    cameras = [{pid: t for pid, t in cam.items() if pid in keep} for cam in cameras]
    return _two_camera_split("prid2011", folder, cameras, split_id)


def _person_tracklets(camera_dir, camid, name):
    """{identity: tracklet} for the ``person...`` folders of one camera (identity = its digits)."""
    tracklets = {}
    for person in sorted(p for p in camera_dir.iterdir() if p.is_dir()):
        digits = re.sub(r"\D", "", person.name)
        frames = list_images(person)
        if digits and frames:
            tracklets[int(digits)] = Tracklet(tuple(str(p) for p in frames), int(digits), camid)
    if not tracklets:
        raise DatasetError(f"{name}: no person folder with frames in {camera_dir}")
    return tracklets


def _two_camera_split(name, folder, cameras, split_id):
    both = sorted(set(cameras[0]) & set(cameras[1]))
    if len(both) < 2:
        raise DatasetError(f"{name}: {len(both)} identities have a tracklet in both cameras; "
                           f"a split needs at least 2")
    train_ids, test_ids = _split_ids(both, len(both) // 2, split_id, name)
    train = [cam[pid] for pid in sorted(train_ids) for cam in cameras]
    return VideoReidDataset(name, folder, _relabel(train),
                            [cameras[0][pid] for pid in sorted(test_ids)],
                            [cameras[1][pid] for pid in sorted(test_ids)],
                            notes=[f"split {split_id}: {len(train_ids)} train / {len(test_ids)} "
                                   f"test identities (seeded)"])


def load_dukemtmc_videoreid(root):
    """DukeMTMC-VideoReID: ``train/``, ``query/``, ``gallery/``, each ``PPPP/TTTT/*.jpg``
    (702 train ids / 2,196 tracklets; 702 query ids; the gallery adds 408 distractor ids).
    The camera is read from the frame names (``0001_C6_F0099_X30823.jpg``)."""
    folder = find_root(root, "dukemtmcvidreid", ("train", "query", "gallery"),
                       ("", "DukeMTMC-VideoReID", "dukemtmc-vidreid/DukeMTMC-VideoReID",
                        "dukemtmc-videoreid/DukeMTMC-VideoReID"))
    splits = {split: _duke_video_split(folder / split) for split in ("train", "query", "gallery")}
    return VideoReidDataset("dukemtmcvidreid", folder, _relabel(splits["train"]),
                            splits["query"], splits["gallery"])


def _duke_video_split(split_dir):
    tracklets = []
    for identity in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if not identity.name.isdigit():
            raise DatasetError(f"dukemtmcvidreid: {identity} is not an identity folder "
                               f"(digits); remove it")
        for track in sorted(p for p in identity.iterdir() if p.is_dir()):
            frames = list_images(track)
            if not frames:
                continue
            match = DUKE_VIDEO_NAME.match(frames[0].name)
            if match is None:
                raise DatasetError(f"dukemtmcvidreid: {frames[0]} is not named "
                                   f"'PPPP_CC_FFFFF_...jpg'; the camera cannot be read")
            tracklets.append(Tracklet(tuple(str(p) for p in frames), int(identity.name),
                                      int(match.group(1)) - 1))
    if not tracklets:
        raise DatasetError(f"dukemtmcvidreid: no tracklet (PPPP/TTTT/*.jpg) in {split_dir}")
    return tracklets


VIDEO_DATASETS = {
    "mars": load_mars,
    "ilidsvid": load_ilidsvid,
    "prid2011": load_prid2011,
    "dukemtmcvidreid": load_dukemtmc_videoreid,
}


def build_video_dataset(name, root, **options):
    """Loads video dataset ``name`` (a key of :data:`VIDEO_DATASETS`) from ``root``."""
    if name not in VIDEO_DATASETS:
        raise DatasetError(f"unknown video dataset {name!r}; choose one of "
                           f"{', '.join(VIDEO_DATASETS)}")
    return VIDEO_DATASETS[name](root, **options)


# ------------------------------------------------------------------------- temporal sampling

def restricted_random_indices(num_frames, seq_len, rng=random):
    """Restricted random sampling (Li et al., CVPR 2018): the tracklet is cut into ``seq_len``
    segments of equal length, ``[k n // T, (k + 1) n // T)``, and one frame is drawn uniformly
    from each. A tracklet shorter than ``seq_len`` gives :func:`evenly_spaced_indices`."""
    if num_frames < seq_len:
        return evenly_spaced_indices(num_frames, seq_len)
    bounds = [k * num_frames // seq_len for k in range(seq_len + 1)]
    return [rng.randrange(bounds[k], bounds[k + 1]) for k in range(seq_len)]


def random_stride_indices(num_frames, seq_len, stride, rng=random):
    """The training crop of IAUnet's authors' video code (TCLNet, BiCnet-TKS
    ``TemporalRandomCrop``): ``seq_len`` frames ``stride`` apart from a random start when the
    tracklet holds ``seq_len * stride`` frames; else ``seq_len`` distinct random frames in
    order; else ``seq_len`` random frames with repeats, in order."""
    if num_frames >= seq_len * stride:
        start = rng.randint(0, num_frames - (seq_len - 1) * stride - 1)
        return list(range(start, start + (seq_len - 1) * stride + 1, stride))
    if num_frames >= seq_len:
        return sorted(rng.sample(range(num_frames), seq_len))
    return sorted(rng.randrange(num_frames) for _ in range(seq_len))


def evenly_spaced_indices(num_frames, seq_len):
    """``seq_len`` frames ``k n // T``, k = 0..T-1: the first of each equal segment (frames repeat
    when the tracklet is shorter)."""
    return [k * num_frames // seq_len for k in range(seq_len)]


def chunk_indices(num_frames, seq_len):
    """Every frame, in chunks of ``seq_len`` consecutive frames; the last chunk is completed by
    looping from the first frame (as the authors' ``test_all_frames`` pads a tracklet)."""
    total = math.ceil(num_frames / seq_len) * seq_len
    looped = [i % num_frames for i in range(total)]
    return [looped[i:i + seq_len] for i in range(0, total, seq_len)]


CLIP_SAMPLINGS = ("rrs", "stride", "evenly", "all")


class ClipTransform:
    """Frames (PIL) -> a (T, 3, H, W) clip: resize, horizontal flip, ToTensor, ImageNet
    normalisation, random erasing, with the random choices drawn once per clip (the same flip and
    the same erased rectangle for every frame, as the authors' video transforms). ``flip=0`` and
    ``erasing=0`` give the test transform."""

    def __init__(self, height, width, flip=0.0, erasing=0.0, erasing_mean=CIFAR_MEAN,
                 interpolation="bicubic"):
        self.size, self.flip = [height, width], flip
        self.mode = INTERPOLATION[interpolation]
        self.erasing = RandomErasing(probability=erasing, mean=erasing_mean) if erasing else None

    def __call__(self, frames):
        clip = torch.stack([TF.normalize(TF.to_tensor(TF.resize(frame, self.size, self.mode)),
                                         IMAGENET_MEAN, IMAGENET_STD) for frame in frames])
        if self.flip and random.random() < self.flip:
            clip = clip.flip(-1)
        if self.erasing is not None:
            clip = self.erasing(clip)
        return clip


class ClipDataset(Dataset):
    """Clips of ``seq_len`` frames: items ``(clip (T, 3, H, W), pid, camid)``.

    ``sampling``:

    - ``"rrs"`` (restricted random sampling) or ``"stride"`` (random start, ``stride`` apart):
      one random clip per tracklet each time it is read, for training;
    - ``"evenly"``: one clip of evenly spaced frames per tracklet;
    - ``"all"``: every frame, one item per chunk of ``seq_len`` frames (:func:`chunk_indices`).

    ``tracklet_of_clip[i]`` is the tracklet of item i (``common.eval.tracklet_features`` averages
    the clip features of each tracklet with it).
    """

    def __init__(self, tracklets, seq_len, sampling, transform, stride=8):
        if sampling not in CLIP_SAMPLINGS:
            raise ValueError(f"clip sampling {sampling!r}: choose one of "
                             f"{', '.join(CLIP_SAMPLINGS)}")
        if seq_len < 1 or stride < 1:
            raise ValueError(f"seq_len ({seq_len}) and stride ({stride}) must be >= 1")
        self.tracklets = list(tracklets)
        self.seq_len, self.sampling, self.stride = seq_len, sampling, stride
        self.transform = transform
        if sampling == "all":
            self.clips = [(index, chunk) for index, tracklet in enumerate(self.tracklets)
                          for chunk in chunk_indices(len(tracklet.paths), seq_len)]
            self.tracklet_of_clip = np.array([index for index, _ in self.clips], dtype=np.int64)
        else:
            self.clips = None
            self.tracklet_of_clip = np.arange(len(self.tracklets), dtype=np.int64)

    def __len__(self):
        return len(self.tracklet_of_clip)

    def frame_indices(self, index):
        """(tracklet index, the frame indices of item ``index``)."""
        if self.clips is not None:
            return self.clips[index]
        num_frames = len(self.tracklets[index].paths)
        if self.sampling == "rrs":
            return index, restricted_random_indices(num_frames, self.seq_len)
        if self.sampling == "stride":
            return index, random_stride_indices(num_frames, self.seq_len, self.stride)
        return index, evenly_spaced_indices(num_frames, self.seq_len)

    def __getitem__(self, index):
        tracklet_index, frames = self.frame_indices(index)
        tracklet = self.tracklets[tracklet_index]
        clip = self.transform([read_image(tracklet.paths[i]) for i in frames])
        return clip, tracklet.pid, tracklet.camid
