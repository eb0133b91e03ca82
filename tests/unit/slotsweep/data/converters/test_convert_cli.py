"""The converter CLI (python src/convert.py): each command on tiny releases and shards."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from real_formats import write_coco_release, write_movi_shards, write_ytvis_release
from slotsweep.data.converters.cli import main
from slotsweep.data.shards import read_samples
from slotsweep.data.video_files import read_masks

REPO = Path(__file__).resolve().parents[5]


def test_ytvis_command(tmp_path):
    release = write_ytvis_release(tmp_path / "release", n_videos=3, polygons=False)
    out = tmp_path / "data" / "ytvis2021_resized"
    main(["ytvis", "--src", str(release.src), "--out", str(out), "--resize", "12", "--val-videos", "1"])
    assert sorted(p.name for p in out.iterdir()) == ["ytvis-train-000000.tar", "ytvis-validation-000000.tar"]
    (sample,) = read_samples([out / "ytvis-validation-000000.tar"], ("video", "segmentations"))
    assert sample["__key__"] == release.names[-1] and sample["video"].shape[1:] == (12, 17, 3)


def test_coco_command(tmp_path):
    release = write_coco_release(tmp_path / "coco2017", n_train=2, n_val=2)
    main(["coco", "--src", str(release.src), "--out", str(tmp_path / "coco"), "--splits", "train"])
    assert len(list(read_samples([tmp_path / "coco" / "coco-train-000000.tar"], ("image",)))) == 2


def test_videos_command(tmp_path):
    write_movi_shards(tmp_path, n_train=2, n_val=1, per_shard=1, n_frames=4, size=20)
    out = tmp_path / "videos"
    main([
        "videos", "--layout", "movi", "--out", str(out),
        "--train-shards", f"{tmp_path}/movi_c/movi_c-train-{{000000..000001}}.tar",
        "--val-shards", f"{tmp_path}/movi_c/movi_c-validation-000000.tar",
    ])  # fmt: skip
    assert sorted(p.name for p in out.glob("*.mp4")) == ["000000.mp4", "000001.mp4"]
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["000000.masks.npz", "000000.mp4"]
    (sample,) = read_samples([tmp_path / "movi_c" / "movi_c-validation-000000.tar"], ("segmentations",))
    masks = read_masks(out / "validation" / "000000.masks.npz", 11, background=True)
    assert np.array_equal(masks.argmax(axis=1), sample["segmentations"][..., 0])


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["videos", "--layout", "movi", "--out", str(tmp_path), "--val-shards", "nope-{0..2}.tar"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "error: nope-{0..2}.tar: 3 of 3 shards missing, e.g. nope-0.tar"
    with pytest.raises(SystemExit) as exit_:
        main(["ytvis", "--src", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and "instances.json not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["videos", "--layout", "movi", "--out", str(tmp_path)])
    assert "give --train-shards and/or --val-shards" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is not None, reason="tfds installed")
def test_movi_command_without_the_extra(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["movi", "--variant", "movi_e", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "pip install 'slotsweep[movi]'" in capsys.readouterr().err


def test_entry_point_help():
    result = subprocess.run(
        [sys.executable, "src/convert.py", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "{ytvis,coco,movi,videos}" in result.stdout
