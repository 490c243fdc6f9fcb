"""Parsers for the benchmarks the five methods report on, plus a folder-per-identity dataset.

Each ``load_*`` function takes the dataset root (the extracted folder itself, or a parent holding
it under its usual name) and returns a :class:`~common.data.dataset.ReidDataset`. Cameras are
0-based; train identities are relabelled to ``0..N-1``; query and gallery keep the dataset's ids.
Statistics to expect on the full data are in ``shared/specs/ecosystem.md`` §2.2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data.dataset import (DatasetError, ReidDataset, Sample, find_root, list_images,
                                 parse_market_style, relabel)

__all__ = ["DATASETS", "build_dataset", "load_cuhk01", "load_cuhk03np", "load_dukemtmcreid",
           "load_folder", "load_market1501", "load_msmt17", "load_prid450s"]

MARKET_SPLITS = ("bounding_box_train", "query", "bounding_box_test")
NUM_RANDOM_SPLITS = 10
SPLIT_SEED = 20260101  # base seed of the CUHK01 and PRID-450s splits; split k uses (seed, k)


def _market_layout(folder, name, drop_junk_gallery, pid_zero_is_distractor=False):
    """Reads the three Market-style folders; junk (pid -1), and pid 0 where it marks Market's
    distractors, never enter the train set."""
    first_id = 1 if pid_zero_is_distractor else 0
    train = [s for s in parse_market_style(folder / "bounding_box_train", name)
             if s.pid >= first_id]
    if not train:
        raise DatasetError(f"{name}: no labelled training image (pid >= {first_id}) in "
                           f"{folder / 'bounding_box_train'}")
    query = parse_market_style(folder / "query", name)
    gallery = parse_market_style(folder / "bounding_box_test", name)
    if drop_junk_gallery:
        gallery = [s for s in gallery if s.pid != -1]
    return ReidDataset(name, folder, relabel(train), query, gallery)


def load_market1501(root, keep_junk=False):
    """Market-1501: ``bounding_box_train``, ``query``, ``bounding_box_test``.

    Gallery images with pid -1 (junk) are dropped, as torchreid does, unless ``keep_junk``; the
    evaluator treats pid -1 as junk either way, so both give the official numbers. pid 0
    (distractors) stays in the gallery as negatives and is never trained on.
    """
    folder = find_root(root, "market1501", MARKET_SPLITS,
                       ("", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15",
                        "market1501", "Market-1501"))
    return _market_layout(folder, "market1501", drop_junk_gallery=not keep_junk,
                          pid_zero_is_distractor=True)


def load_dukemtmcreid(root):
    """DukeMTMC-reID in its released Market-style layout (8 cameras, nothing dropped)."""
    folder = find_root(root, "dukemtmcreid", MARKET_SPLITS,
                       ("", "DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid"))
    return _market_layout(folder, "dukemtmcreid", drop_junk_gallery=False)


def load_cuhk03np(root, variant="detected"):
    """CUHK03-NP (767/700 split), ``variant`` = ``"detected"`` or ``"labeled"``.

    Two layouts are read: the Market-style release (``<variant>/bounding_box_train`` ...,
    names ``0001_c1_1.png``), and the official protocol file
    ``cuhk03_new_protocol_config_<variant>.mat`` beside an ``images_<variant>/`` folder of the
    images it lists (torchreid's extracted layout).
    """
    if variant not in ("detected", "labeled"):
        raise DatasetError(f"cuhk03np: variant must be 'detected' or 'labeled', got {variant!r}")
    root = Path(root).expanduser()
    protocol = f"cuhk03_new_protocol_config_{variant}.mat"
    for candidate in ("", "cuhk03", "cuhk03_release"):
        if (root / candidate / protocol).is_file() and (root / candidate / f"images_{variant}").is_dir():
            return _cuhk03np_from_protocol(root / candidate, variant)
    try:
        folder = find_root(root, "cuhk03np", MARKET_SPLITS,
                           (variant, f"cuhk03-np/{variant}", f"cuhk03_np/{variant}",
                            f"CUHK03-NP/{variant}", ""))
    except DatasetError as err:
        raise DatasetError(f"{err} (or put {protocol} beside an images_{variant}/ folder)") from None
    return _market_layout(folder, f"cuhk03np-{variant}", drop_junk_gallery=False)


def _cuhk03np_from_protocol(folder, variant):
    import scipy.io

    config = scipy.io.loadmat(folder / f"cuhk03_new_protocol_config_{variant}.mat")
    names = [str(np.ravel(entry)[0]) for entry in config["filelist"].ravel()]
    labels = config["labels"].ravel().astype(int)
    cameras = config["camId"].ravel().astype(int) - 1
    images = folder / f"images_{variant}"
    missing = [n for n in names if not (images / n).is_file()]
    if missing:
        raise DatasetError(f"cuhk03np: {len(missing)} of {len(names)} images listed in the "
                           f"protocol file are missing from {images}, e.g. "
                           f"{', '.join(missing[:5])}; extract them from cuhk-03.mat first")

    def subset(key):
        return [Sample(str(images / names[i]), int(labels[i]), int(cameras[i]))
                for i in config[key].ravel().astype(int) - 1]

    return ReidDataset(f"cuhk03np-{variant}", folder, relabel(subset("train_idx")),
                       subset("query_idx"), subset("gallery_idx"))


def load_msmt17(root, combine_val=False):
    """MSMT17, from its list files or from a Market-style conversion.

    List layout (V1 ``train/ test/``, V2 ``mask_train_v2/ mask_test_v2/``, with
    ``list_{train,val,query,gallery}.txt`` lines ``<relative path> <pid>``; the camera is the
    third ``_`` field of the file name, 1-based). ``combine_val`` adds ``list_val.txt`` to train
    (off by default, as published methods train on ``list_train.txt`` only).
    """
    root = Path(root).expanduser()
    lists = ("list_train.txt", "list_query.txt", "list_gallery.txt")
    candidates = ("", "MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2", "MSMT17")
    for candidate in candidates:
        folder = root / candidate
        if all((folder / name).is_file() for name in lists):
            return _msmt17_from_lists(folder, combine_val)
    try:
        folder = find_root(root, "msmt17", MARKET_SPLITS, candidates)
    except DatasetError as err:
        raise DatasetError(f"{err} (or the list layout: {', '.join(lists)} beside train/ and "
                           f"test/ image folders)") from None
    return _market_layout(folder, "msmt17", drop_junk_gallery=False)


def _msmt17_from_lists(folder, combine_val):
    train_dir = folder / ("train" if (folder / "train").is_dir() else "mask_train_v2")
    test_dir = folder / ("test" if (folder / "test").is_dir() else "mask_test_v2")

    def read(list_name, image_dir):
        samples = []
        for number, line in enumerate((folder / list_name).read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rel, pid = line.split()
                camid = int(Path(rel).name.split("_")[2]) - 1
            except (ValueError, IndexError):
                raise DatasetError(f"msmt17: line {number} of {folder / list_name} is not "
                                   f"'<path> <pid>' with a '<pid>_<n>_<camera>_...' file name: "
                                   f"{line!r}") from None
            samples.append(Sample(str(image_dir / rel), int(pid), camid))
        if not samples:
            raise DatasetError(f"msmt17: {folder / list_name} lists no image")
        if not Path(samples[0].path).is_file():
            raise DatasetError(f"msmt17: {samples[0].path} (first entry of {list_name}) does not "
                               f"exist; the image folders must sit beside the list files")
        return samples

    train = read("list_train.txt", train_dir)
    if combine_val:
        train += read("list_val.txt", train_dir)
    return ReidDataset("msmt17", folder, relabel(train), read("list_query.txt", test_dir),
                       read("list_gallery.txt", test_dir))


def _split_ids(ids, num_train, split_id, name):
    if not 0 <= split_id < NUM_RANDOM_SPLITS:
        raise DatasetError(f"{name}: split_id must be in 0..{NUM_RANDOM_SPLITS - 1}, got {split_id}")
    if not 0 < num_train < len(ids):
        raise DatasetError(f"{name}: {len(ids)} identities cannot give {num_train} train "
                           f"identities and a non-empty test set; pass num_train_ids "
                           f"between 1 and {len(ids) - 1}")
    order = np.random.default_rng([SPLIT_SEED, split_id]).permutation(len(ids))
    ids = np.asarray(sorted(ids))
    return set(ids[order[:num_train]].tolist()), set(ids[order[num_train:]].tolist())


def load_cuhk01(root, split_id=0, num_train_ids=485):
    """CUHK01 (``campus/PPPPMMM.png``; images 001-002 camera A, 003-004 camera B).

    Split ``split_id`` (0-9) draws ``num_train_ids`` train identities with a seeded generator
    (485 of 971 gives the usual 485/486 split); the test identities' camera-A images are the
    query and their camera-B images the gallery.
    """
    root = Path(root).expanduser()
    folder = next((root / c for c in ("campus", "cuhk01/campus", "CUHK01/campus")
                   if (root / c).is_dir()), root)
    images = list_images(folder) if folder.is_dir() else []
    if not images:
        raise DatasetError(f"cuhk01: no image in {folder}; point the root at the folder that "
                           f"holds campus/ (or at campus/ itself)")
    samples, bad = [], []
    for path in images:
        stem = path.stem
        if len(stem) != 7 or not stem.isdigit():
            bad.append(path.name)
            continue
        samples.append(Sample(str(path), int(stem[:4]), (int(stem[4:7]) - 1) // 2))
    if bad:
        raise DatasetError(f"cuhk01: {len(bad)} file name(s) in {folder} are not 'PPPPMMM.png', "
                           f"e.g. {', '.join(bad[:5])}; rename or remove them")
    train_ids, _ = _split_ids({s.pid for s in samples}, num_train_ids, split_id, "cuhk01")
    test = [s for s in samples if s.pid not in train_ids]
    return ReidDataset("cuhk01", folder, relabel([s for s in samples if s.pid in train_ids]),
                       [s for s in test if s.camid == 0], [s for s in test if s.camid == 1])


def load_prid450s(root, split_id=0):
    """PRID-450s (``cam_a/img_XXXX.png``, ``cam_b/img_XXXX.png``), the protocol of iabnet.md §5.2.

    Split ``split_id`` (0-9) draws half of the identities (225 of 450) for training with a seeded
    generator. Query and gallery are both every test image: under the same-identity same-camera
    rule each query has exactly one valid match (its other-camera image), so mAP equals the mean
    reciprocal rank.
    """
    folder = find_root(root, "prid450s", ("cam_a", "cam_b"),
                       ("", "prid_450s", "PRID-450s", "prid450s"))
    per_camera = []
    for camid, cam in enumerate(("cam_a", "cam_b")):
        found = {}
        for path in list_images(folder / cam):
            if path.stem.startswith("img_") and path.stem[4:].isdigit():
                found[int(path.stem[4:])] = Sample(str(path), int(path.stem[4:]), camid)
        if not found:
            raise DatasetError(f"prid450s: no img_XXXX.png image in {folder / cam}")
        per_camera.append(found)
    unpaired = sorted(set(per_camera[0]) ^ set(per_camera[1]))
    if unpaired:
        raise DatasetError(f"prid450s: identities {unpaired[:10]} have an image in only one "
                           f"camera; every identity needs img_XXXX.png in cam_a and cam_b")
    ids = sorted(per_camera[0])
    train_ids, test_ids = _split_ids(ids, len(ids) // 2, split_id, "prid450s")
    train = [cam[i] for i in sorted(train_ids) for cam in per_camera]
    test = [cam[i] for i in sorted(test_ids) for cam in per_camera]
    return ReidDataset("prid450s", folder, relabel(train), list(test), list(test))


def load_folder(root):
    """A custom dataset: ``<root>/{train,query,gallery}/<identity>/[<camera>/]<image>``.

    Identity folder names that are all integers keep their values (so -1 junk and 0 distractors
    keep their meaning); otherwise query and gallery names share one sorted mapping. Cameras come
    from the optional ``<camera>`` subfolders. Without them, train images get camera 0, query
    images camera 0 and gallery images camera 1, so that evaluation keeps every true match
    (ecosystem.md §7.3). ``train`` may be absent (evaluation only).
    """
    folder = find_root(root, "folder", ("query", "gallery"))
    raw = {split: _read_identity_folders(folder / split) for split in ("train", "query", "gallery")
           if (folder / split).is_dir()}
    for split in ("query", "gallery"):
        if not raw[split]:
            raise DatasetError(f"folder: {folder / split} holds no <identity>/<image> file")
    cameras = sorted({cam for entries in raw.values() for _, _, cam in entries if cam is not None})
    camera_id = {cam: i for i, cam in enumerate(cameras)}
    test_names = sorted({name for split in ("query", "gallery") for name, _, _ in raw[split]},
                        key=_identity_sort_key)
    numeric = all(_is_int(name) for name in test_names)
    pid_of = {name: (int(name) if numeric else i) for i, name in enumerate(test_names)}
    default_camera = {"train": 0, "query": 0, "gallery": 1}

    def samples(split, pid_map):
        return [Sample(str(path), pid_map[name],
                       camera_id[cam] if cam is not None else default_camera[split])
                for name, path, cam in raw.get(split, [])]

    train_names = sorted({name for name, _, _ in raw.get("train", [])}, key=_identity_sort_key)
    train = relabel(samples("train", {name: i for i, name in enumerate(train_names)}))
    return ReidDataset("folder", folder, train, samples("query", pid_of),
                       samples("gallery", pid_of))


def _is_int(text):
    return text.lstrip("-").isdigit()


def _identity_sort_key(name):
    return (0, int(name), "") if _is_int(name) else (1, 0, name)


def _read_identity_folders(split_dir):
    """``(identity, path, camera or None)`` for every image of one split folder."""
    entries = []
    for identity in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        direct = list_images(identity)
        camera_dirs = sorted(p for p in identity.iterdir() if p.is_dir())
        if direct and camera_dirs:
            raise DatasetError(f"folder: {identity} holds both images and subfolders; put every "
                               f"image in a camera subfolder, or none")
        entries += [(identity.name, path, None) for path in direct]
        for camera in camera_dirs:
            entries += [(identity.name, path, camera.name) for path in list_images(camera)]
    stray = list_images(split_dir)
    if stray:
        raise DatasetError(f"folder: {split_dir} holds images outside identity folders, e.g. "
                           f"{stray[0].name}; move each into {split_dir}/<identity>/")
    return entries


DATASETS = {
    "market1501": load_market1501,
    "dukemtmcreid": load_dukemtmcreid,
    "cuhk03np": load_cuhk03np,
    "msmt17": load_msmt17,
    "cuhk01": load_cuhk01,
    "prid450s": load_prid450s,
    "folder": load_folder,
}


def build_dataset(name, root, **options):
    """Loads dataset ``name`` (a key of :data:`DATASETS`) from ``root``."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](root, **options)
