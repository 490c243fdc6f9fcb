"""The dataset record every parser returns, and the helpers the parsers share.

A dataset is three lists of :class:`Sample` (image path, identity, 0-based camera): ``train``
with identities relabelled to ``0..N-1``, and ``query`` / ``gallery`` sharing one identity space
(as torchreid's ``ImageDataset``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "DatasetError", "ReidDataset", "Sample", "find_root",
           "list_images", "parse_market_style", "relabel"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")

# Market-1501 / DukeMTMC-reID / CUHK03-NP / MSMT17-in-Market-layout file names:
# "0002_c1s1_000451_03.jpg", "-1_c3s2_...", "0001_c2_f0046182.jpg", "0000_c14_0025.jpg".
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class DatasetError(ValueError):
    """A dataset folder that does not hold what its parser expects; the message says the fix."""


@dataclass(frozen=True)
class Sample:
    path: str
    pid: int
    camid: int


@dataclass
class ReidDataset:
    name: str
    root: Path
    train: list = field(default_factory=list)
    query: list = field(default_factory=list)
    gallery: list = field(default_factory=list)

    @property
    def num_train_pids(self):
        return len({s.pid for s in self.train})

    @property
    def num_train_cams(self):
        return len({s.camid for s in self.train})

    def summary(self):
        """The statistics table torchreid prints, one row per subset."""
        lines = [f"=> {self.name} loaded from {self.root}",
                 "  ----------------------------------------",
                 "  subset   | # ids | # images | # cameras",
                 "  ----------------------------------------"]
        for subset in ("train", "query", "gallery"):
            samples = getattr(self, subset)
            lines.append(f"  {subset:<8} | {len({s.pid for s in samples}):5d} | {len(samples):8d} "
                         f"| {len({s.camid for s in samples}):9d}")
        lines.append("  ----------------------------------------")
        return "\n".join(lines)


def find_root(root, name, required, candidates=("",)):
    """Returns the first ``root / candidate`` that holds every entry of ``required``.

    Raises :class:`DatasetError` listing where it looked, what it expected, and what it found.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{name}: dataset root {root} does not exist or is not a folder; "
                           f"pass the folder that holds {', '.join(required)}")
    for candidate in candidates:
        folder = root / candidate
        if all((folder / entry).exists() for entry in required):
            return folder
    found = sorted(p.name for p in root.iterdir())[:20]
    looked = ", ".join(str(root / c) if c else str(root) for c in candidates)
    raise DatasetError(f"{name}: expected {', '.join(required)} in one of: {looked}. "
                       f"{root} holds: {', '.join(found) if found else '(nothing)'}. "
                       f"Point the root at the extracted dataset folder.")


def list_images(folder, recursive=False):
    """Image files under ``folder`` (by extension), sorted by path."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def parse_market_style(folder, name, camera_base=1):
    """Parses ``PPPP_cC...`` image names in ``folder`` into samples with 0-based cameras.

    Raises :class:`DatasetError` when the folder holds no image or a name does not parse.
    """
    images = list_images(folder)
    if not images:
        raise DatasetError(f"{name}: no image ({', '.join(IMAGE_EXTENSIONS)}) in {folder}; "
                           f"the split is empty or the dataset was not fully extracted")
    samples, bad = [], []
    for path in images:
        match = MARKET_NAME.match(path.name)
        if match is None:
            bad.append(path.name)
            continue
        samples.append(Sample(str(path), int(match.group(1)), int(match.group(2)) - camera_base))
    if bad:
        raise DatasetError(f"{name}: {len(bad)} file name(s) in {folder} do not follow the "
                           f"'<pid>_c<camera>...' pattern, e.g. {', '.join(bad[:5])}; "
                           f"rename or remove them")
    return samples


def relabel(samples):
    """Maps the identities of ``samples`` to ``0..N-1`` in sorted order."""
    label = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, label[s.pid], s.camid) for s in samples]
