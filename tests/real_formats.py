"""Tiny datasets in the exact on-disk formats of the real ones, written without slotsweep's code.

- Reference shards (videosaur.md §5): tars of `<key>.<name>.npy` files with the reference's names,
  keys, dtypes and shapes, for MOVi-C/E, YT-VIS and COCO (`write_*_shards`).
- Official releases for the converters: a YouTube-VIS 2021 train folder (JPEGs + instances.json with
  compressed RLE, uncompressed RLE, polygons and null frames) and a COCO 2017 root (JPEGs + instances
  JSON with polygons, compressed RLE and a crowd annotation).

Contents are random but fixed by a seed; masks are rectangles so that tests can reason about them.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_tar(path: Path, samples: list[dict[str, np.ndarray]]) -> None:
    """One shard: for each sample, `<__key__>.<name>` members holding .npy bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for name, value in sample.items():
                if name == "__key__":
                    continue
                data = _npy(value)
                info = tarfile.TarInfo(f"{sample['__key__']}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _boxes(rng: np.random.Generator, T: int, H: int, W: int, n: int) -> np.ndarray:
    """(T, H, W) uint8 ids 0..n: n rectangles drifting over the frames, later ids in front."""
    ids = np.zeros((T, H, W), np.uint8)
    for k in range(1, n + 1):
        h, w = rng.integers(2, max(3, H // 2)), rng.integers(2, max(3, W // 2))
        y, x = rng.integers(0, H - h), rng.integers(0, W - w)
        dy, dx = rng.integers(-1, 2, 2)
        for t in range(T):
            yy, xx = np.clip(y + dy * t, 0, H - h), np.clip(x + dx * t, 0, W - w)
            ids[t, yy : yy + h, xx : xx + w] = k
    return ids


def _frames(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8: a colour per id plus noise."""
    palette = rng.integers(0, 256, (256, 3))
    noise = rng.integers(-10, 11, (*ids.shape, 3))
    return np.clip(palette[ids] + noise, 0, 255).astype(np.uint8)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def write_movi_shards(
    root: Path,
    variant: str = "movi_c",
    n_train: int = 6,
    n_val: int = 5,
    per_shard: int = 2,
    n_frames: int = 24,
    size: int = 128,
    max_objects: int = 10,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """<root>/<variant>/<variant>-{train,validation}-%06d.tar as the reference's MOVi export.

    Train: video.npy (T, H, W, 3) uint8. Validation adds segmentations.npy (T, H, W, 1) uint8 ids
    (0 = background) and forward_flow.npy (T, H, W, 2) float32, which readers must ignore.
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in [("train", n_train), ("validation", n_val)]:
        samples = []
        for i in range(n):
            ids = _boxes(rng, n_frames, size, size, int(rng.integers(1, max_objects + 1)))
            sample = {"__key__": f"{i:06d}", "video.npy": _frames(rng, ids)}
            if split == "validation":
                sample["segmentations.npy"] = ids[..., None]
                sample["forward_flow.npy"] = rng.normal(size=(n_frames, size, size, 2)).astype(np.float32)
            samples.append(sample)
        paths = []
        for index, chunk in enumerate(_chunks(samples, per_shard)):
            path = root / variant / f"{variant}-{split}-{index:06d}.tar"
            write_tar(path, chunk)
            paths.append(path)
        written[split] = paths
    return written


YTVIS_LENGTHS = (13, 7, 3, 9, 12)  # frames per validation video: 2, 1, 0, 1, 2 chunks of 6


def write_ytvis_shards(
    root: Path,
    folder: str = "ytvis2021_resized",
    n_train: int = 5,
    lengths: tuple[int, ...] = YTVIS_LENGTHS,
    per_shard: tuple[int, int] = (2, 2),
    short_side: int = 20,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """<root>/<folder>/ytvis-{train,validation}-%06d.tar as the reference's YT-VIS export.

    Videos are landscape or portrait, of various lengths. Validation segmentations.npy is
    (T, H, W, N) uint8, channel i = instance i's mask x category id; the third validation video has
    no annotation and stores one zero channel.
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, video_lengths in [("train", [5 + 2 * i for i in range(n_train)]), ("validation", lengths)]:
        samples = []
        for i, T in enumerate(video_lengths):
            H, W = (short_side, short_side * 3 // 2) if i % 2 == 0 else (short_side * 3 // 2, short_side)
            n = 0 if (split == "validation" and i == 2) else int(rng.integers(1, 4))
            ids = _boxes(rng, T, H, W, n)
            sample = {"__key__": f"video{i:04d}", "video.npy": _frames(rng, ids)}
            if split == "validation":
                categories = rng.integers(1, 41, max(n, 1))
                channels = [(ids == k + 1) * categories[k] for k in range(n)] or [np.zeros_like(ids)]
                sample["segmentations.npy"] = np.stack(channels, -1).astype(np.uint8)
            samples.append(sample)
        size = per_shard[0] if split == "train" else per_shard[1]
        paths = []
        for index, chunk in enumerate(_chunks(samples, size)):
            path = root / folder / f"ytvis-{split}-{index:06d}.tar"
            write_tar(path, chunk)
            paths.append(path)
        written[split] = paths
    return written


def write_coco_shards(
    root: Path, n_train: int = 5, n_val: int = 5, per_shard: int = 2, seed: int = 0
) -> dict[str, list[Path]]:
    """<root>/coco/coco-{train,validation}-%06d.tar as the reference's COCO export.

    image.npy (H, W, 3) uint8 of various sizes; validation segmentations.npy (N, H, W) uint8 =
    instance mask x category id, overlapping; the second validation image has none: (1, H, W) zeros.
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in [("train", n_train), ("validation", n_val)]:
        samples = []
        for i in range(n):
            H, W = int(rng.integers(20, 30)), int(rng.integers(20, 30))
            n_instances = 0 if (split == "validation" and i == 1) else int(rng.integers(1, 4))
            masks = np.zeros((max(n_instances, 1), H, W), np.uint8)
            for k in range(n_instances):  # independent rectangles: they may overlap
                y, x = rng.integers(0, H - 5), rng.integers(0, W - 5)
                masks[k, y : y + int(rng.integers(3, 10)), x : x + int(rng.integers(3, 10))] = rng.integers(
                    1, 91
                )
            image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            sample = {"__key__": f"{i:012d}", "image.npy": image}
            if split == "validation":
                sample["segmentations.npy"] = masks
            samples.append(sample)
        paths = []
        for index, chunk in enumerate(_chunks(samples, per_shard)):
            path = root / "coco" / f"coco-{split}-{index:06d}.tar"
            write_tar(path, chunk)
            paths.append(path)
        written[split] = paths
    return written


# --- Official releases ------------------------------------------------------------------------


def rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of an (H, W) 0/1 mask: run lengths in column-major order, 0s first."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def rle_compressed(mask: np.ndarray) -> dict:
    """COCO compressed RLE (the counts string of pycocotools' rleToString)."""
    counts = rle_uncompressed(mask)["counts"]
    out = []
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return {"counts": "".join(out), "size": list(mask.shape)}


def rectangle_polygon(y: int, x: int, h: int, w: int) -> list[list[float]]:
    """A COCO polygon (x0, y0, x1, y1, ...) around pixels [y, y+h) x [x, x+w)."""
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _save_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


@dataclass
class YtvisRelease:
    """A tiny YouTube-VIS 2021 train folder and what its masks are, per video in file order."""

    src: Path
    names: list[str]
    masks: list[np.ndarray]  # (T, H, W, N) uint8 instance x category (one zero channel if none)


def write_ytvis_release(root: Path, n_videos: int = 5, polygons: bool = True, seed: int = 0) -> YtvisRelease:
    """<root>/train/{JPEGImages/<video>/<frame>.jpg, instances.json} in the official 2021 format.

    Segmentations per frame: compressed RLE, uncompressed RLE, null (not visible), and a polygon
    (if `polygons`; its pixels are a rectangle pycocotools rasterises exactly). The last video has
    no annotation. Video ids are not in name order, to check that file order is kept.
    """
    rng = np.random.default_rng(seed)
    src = root / "train"
    videos, annotations, names, all_masks = [], [], [], []
    for v in range(n_videos):
        name = f"{rng.integers(16**9):010x}"
        T, H, W = int(rng.integers(3, 6)), 18, 26
        ids = _boxes(rng, T, H, W, 0 if v == n_videos - 1 else 2)
        frames = _frames(rng, ids)
        file_names = [f"{name}/{5 * t:05d}.jpg" for t in range(T)]
        for t, file_name in enumerate(file_names):
            _save_jpeg(src / "JPEGImages" / file_name, frames[t])
        video_id = 100 - v
        videos.append({"id": video_id, "width": W, "height": H, "length": T, "file_names": file_names})
        masks = np.zeros((T, H, W, max(int(ids.max()), 1)), np.uint8)
        for k in range(1, int(ids.max()) + 1):
            category = int(rng.integers(1, 41))
            segmentations = []
            for t in range(T):
                mask = (ids[t] == k).astype(np.uint8)
                if t == 1:  # not visible in this frame
                    segmentations.append(None)
                    continue
                if polygons and t == 2 and k == 1:
                    mask = np.zeros_like(mask)
                    mask[3:9, 4:12] = 1
                    segmentations.append(rectangle_polygon(3, 4, 6, 8))
                else:
                    encode = rle_compressed if (t + k) % 2 == 0 else rle_uncompressed
                    segmentations.append(encode(mask))
                masks[t, :, :, k - 1] = mask * category
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": category,
                    "iscrowd": 0,
                    "segmentations": segmentations,
                    "height": H,
                    "width": W,
                    "length": 1,
                }
            )
        names.append(name)
        all_masks.append(masks)
    index = {
        "info": {},
        "licenses": [],
        "categories": [{"id": c, "name": str(c)} for c in range(1, 41)],
        "videos": videos,
        "annotations": annotations,
    }
    (src / "instances.json").write_text(json.dumps(index))
    return YtvisRelease(src, names, all_masks)


@dataclass
class CocoRelease:
    """A tiny COCO 2017 root and the expected validation masks, per image in file order."""

    src: Path
    val_ids: list[int]
    val_masks: list[np.ndarray]  # (N, H, W) uint8 instance x category, crowds removed


def write_coco_release(root: Path, n_train: int = 3, n_val: int = 4, seed: int = 0) -> CocoRelease:
    """<root>/{annotations/instances_{train,val}2017.json, train2017/, val2017/} as COCO 2017.

    Validation annotations: rectangle polygons and compressed RLEs that overlap, one crowd
    annotation (uncompressed RLE, must be dropped), and an image without annotation; one image is
    greyscale.
    """
    rng = np.random.default_rng(seed)
    expected_ids, expected_masks = [], []
    for split, folder, n in [("train", "train2017", n_train), ("validation", "val2017", n_val)]:
        images, annotations = [], []
        for i in range(n):
            image_id = int(rng.integers(1, 10**6))
            H, W = int(rng.integers(16, 24)), int(rng.integers(16, 24))
            pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            file_name = f"{image_id:012d}.jpg"
            path = root / folder / file_name
            if i == 0:  # greyscale JPEG
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels[..., 0]).save(path, quality=95)
            else:
                _save_jpeg(path, pixels)
            images.append({"id": image_id, "file_name": file_name, "height": H, "width": W})
            masks = []
            n_instances = 0 if i == 1 else 3
            for k in range(n_instances):
                y, x, h, w = k * 2, k * 3, 6, 7
                mask = np.zeros((H, W), np.uint8)
                mask[y : y + h, x : x + w] = 1
                category = int(rng.integers(1, 91))
                segmentation = rectangle_polygon(y, x, h, w) if k % 2 == 0 else rle_compressed(mask)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category,
                        "segmentation": segmentation,
                        "iscrowd": 0,
                        "area": int(mask.sum()),
                        "bbox": [x, y, w, h],
                    }
                )
                masks.append(mask * category)
            if i == 2:  # a crowd region: removed by the converter
                crowd = np.zeros((H, W), np.uint8)
                crowd[-5:, -5:] = 1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "segmentation": rle_uncompressed(crowd),
                        "iscrowd": 1,
                        "area": 25,
                        "bbox": [W - 5, H - 5, 5, 5],
                    }
                )
            if split == "validation":
                expected_ids.append(image_id)
                expected_masks.append(np.stack(masks) if masks else np.zeros((1, H, W), np.uint8))
        index = {
            "info": {},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c, "name": str(c)} for c in range(1, 91)],
        }
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(index))
    return CocoRelease(root, expected_ids, expected_masks)
