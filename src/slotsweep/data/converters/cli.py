"""`python src/convert.py <dataset> ...`: official releases -> the reference's shards -> video files.

    python src/convert.py ytvis  --src <YouTubeVIS-2021>/train --out <data_dir>/ytvis2021_resized
    python src/convert.py ytvis  --src <YouTubeVIS-2021>/train --resize 518 \\
        --out <data_dir>/ytvis2021_resized_518
    python src/convert.py coco   --src <COCO-2017> --out <data_dir>/coco
    python src/convert.py movi   --variant movi_c --out <data_dir>/movi_c
    python src/convert.py videos --layout movi --out <data_dir>/movi_c_videos \\
        --train-shards '<data_dir>/movi_c/movi_c-train-{000000..000304}.tar' \\
        --val-shards '<data_dir>/movi_c/movi_c-validation-{000000..000007}.tar'

docs/datasets.md says where to get each release.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from slotsweep.cli import report_errors
from slotsweep.data.converters import coco, movi, ytvis
from slotsweep.data.converters.videos import shards_to_videos
from slotsweep.data.layouts import LAYOUTS
from slotsweep.data.shards import expand_shards
from slotsweep.data.video_files import VAL_SUBDIR
from slotsweep.errors import SlotsweepError

__all__ = ["main", "parser"]


def _size(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python src/convert.py", description=__doc__.split("\n")[0])
    commands = p.add_subparsers(dest="dataset", required=True)

    c = commands.add_parser("ytvis", help="YouTube-VIS 2021 train (JPEGs + instances.json) -> shards")
    c.add_argument("--src", required=True, type=Path, help="the official train folder")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--resize", type=_size, default=320, help="short side in pixels, or none (320)")
    c.add_argument(
        "--resize-mode",
        default="nearest-exact",
        choices=ytvis.RESIZE_MODES,
        help="frame interpolation ([Q] the reference: nearest-exact)",
    )
    c.add_argument("--val-videos", type=int, default=300, help="the last N videos are validation")
    c.add_argument("--limit", type=int, default=None, help="first N videos of each split only")
    c.set_defaults(convert=_ytvis)

    c = commands.add_parser("coco", help="COCO 2017 (images + instances JSON) -> shards")
    c.add_argument("--src", required=True, type=Path, help="the COCO root (annotations/, train2017/, ...)")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--splits", nargs="+", default=list(coco.SPLITS), choices=list(coco.SPLITS))
    c.add_argument("--limit", type=int, default=None, help="first N images of each split only")
    c.set_defaults(convert=_coco)

    c = commands.add_parser("movi", help="MOVi-C/E from TFDS -> shards (needs the movi extra)")
    c.add_argument("--variant", required=True, choices=movi.VARIANTS)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--splits", nargs="+", default=list(movi.SPLITS), choices=movi.SPLITS)
    c.add_argument("--tfds-dir", default=movi.TFDS_DIR, help="TFDS data_dir holding movi_c/movi_e")
    c.add_argument("--resolution", type=int, default=128, help="TFDS config side (the reference: 128)")
    c.add_argument("--limit", type=int, default=None, help="first N videos of each split only")
    c.set_defaults(convert=_movi)

    c = commands.add_parser("videos", help="shards -> a folder of mp4 files + lossless masks")
    c.add_argument("--layout", required=True, choices=sorted(LAYOUTS), help="the shards' sample format")
    c.add_argument("--out", required=True, type=Path, help="train videos here, validation in validation/")
    c.add_argument("--train-shards", default=None, help="brace pattern of train shards")
    c.add_argument("--val-shards", default=None, help="brace pattern of validation shards (with masks)")
    c.add_argument("--fps", type=float, default=10.0)
    c.add_argument("--crf", type=int, default=18, help="x264 quality: 0 lossless YUV, 18 visually lossless")
    c.set_defaults(convert=_videos)
    return p


def _ytvis(args: argparse.Namespace) -> None:
    ytvis.convert_ytvis(args.src, args.out, args.resize, args.resize_mode, args.val_videos, args.limit)


def _coco(args: argparse.Namespace) -> None:
    coco.convert_coco(args.src, args.out, tuple(args.splits), args.limit)


def _movi(args: argparse.Namespace) -> None:
    movi.convert_movi(args.variant, args.out, tuple(args.splits), args.tfds_dir, args.resolution, args.limit)


def _videos(args: argparse.Namespace) -> None:
    for pattern, out in [(args.train_shards, args.out), (args.val_shards, args.out / VAL_SUBDIR)]:
        if pattern is not None:
            shards = expand_shards("", pattern)
            missing = [path for path in shards if not path.is_file()]
            if missing:
                raise SlotsweepError(
                    f"{pattern}: {len(missing)} of {len(shards)} shards missing, e.g. {missing[0]}"
                )
            shards_to_videos(shards, LAYOUTS[args.layout], out, args.fps, args.crf)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parser().parse_args(argv)
    if args.dataset == "videos" and args.train_shards is None and args.val_shards is None:
        parser().error("videos: give --train-shards and/or --val-shards")
    report_errors(args.convert)(args)
