"""src/infer.py on a real mp4 written here: one mask per frame on the video's own (non-square)
frames, slots carried across chunks."""

import json
import shutil
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import torch

from slotsweep.evaluation.inference import OUTSIDE, FrameSource, infer_video, load_checkpoint_model

N_FRAMES = 11  # longer than two chunks of 4, not a multiple of the chunk length
SIZE = 64  # the model's input
HEIGHT, WIDTH = 80, 96  # the video's frames: the centre crop is x 8-88


def write_mp4(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def checkpoint(module_cli) -> Path:
    """A short real training run on shapes through the CLI (once for this file); its last checkpoint."""
    result = module_cli.run("train.py", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = module_cli.runs_dir.glob("*/seed0/results.json")
    return Path(json.loads(results.read_text())["run_dir"]) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96x80 mp4 (not square, so the centre crop matters) with a moving square."""
    frames = np.full((N_FRAMES, HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    for t in range(N_FRAMES):
        frames[t, 20:44, 10 + 4 * t : 34 + 4 * t] = (220, 60, 30)
    return write_mp4(tmp_path_factory.mktemp("video") / "clip.mp4", frames)


def test_cli_writes_one_mask_per_frame(cli, checkpoint: Path, video: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = cli.run("infer.py", f"ckpt={checkpoint}", f"video={video}", f"out={out}", "chunk_size=4")
    assert result.returncode == 0, result.stderr[-3000:]
    written = np.load(out / "masks.npz")
    masks = written["masks"]
    # on the video's own frames, not the model's 64x64 crop; the sides the crop cut off say so
    assert masks.shape == (N_FRAMES, HEIGHT, WIDTH) and masks.dtype == np.uint8
    assert written["view_box"].tolist() == [0, 8, HEIGHT, HEIGHT]
    assert (masks[..., :8] == OUTSIDE).all() and (masks[..., 88:] == OUTSIDE).all()
    assert (masks[..., 8:88] < 7).all()  # a slot everywhere the model saw
    assert "the model saw x 8-88, y 0-80, elsewhere masks.npz holds 255" in result.stdout
    reader = decord.VideoReader(str(out / "overlay.mp4"))
    assert len(reader) == N_FRAMES
    assert reader[0].shape == (HEIGHT, 2 * WIDTH, 3)  # frame | overlay, each at the video's size


def test_cli_says_how_it_fits_frames_and_where_it_runs(cli, checkpoint: Path, video: Path, tmp_path: Path):
    out = tmp_path / "out"
    args = (f"ckpt={checkpoint}", f"video={video}", f"out={out}")
    result = cli.run("infer.py", *args, "resize=stretch", "accelerator=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    said = f"infer: {N_FRAMES} frames of 96x80 on cpu: whole frame resized to {SIZE}x{SIZE} (aspect ratio"
    assert said in result.stdout, result.stdout[-3000:]
    masks = np.load(out / "masks.npz")["masks"]
    assert masks.shape == (N_FRAMES, HEIGHT, WIDTH) and (masks != OUTSIDE).all()  # it saw everything
    if not torch.cuda.is_available():  # a GPU that is absent is an error, before the model loads
        result = cli.run("infer.py", *args, "accelerator=gpu")
        assert result.returncode == 2 and "error: accelerator=gpu but torch sees no CUDA GPU" in result.stderr


def test_checkpoint_alone_is_enough(cli, checkpoint: Path, video: Path, tmp_path: Path):
    """Copied away from its run dir (no config.yaml near it), the checkpoint rebuilds its model."""
    moved = tmp_path / "elsewhere" / "copy.ckpt"
    moved.parent.mkdir()
    shutil.copy(checkpoint, moved)
    out = tmp_path / "out"
    result = cli.run("infer.py", f"ckpt={moved}", f"video={video}", f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    model, _ = load_checkpoint_model(checkpoint)  # in its run dir
    expected = torch.cat([soft for _, soft in infer_video(model, FrameSource(video))]).argmax(dim=1)
    expected[..., :8], expected[..., 88:] = OUTSIDE, OUTSIDE
    assert np.array_equal(np.load(out / "masks.npz")["masks"], expected.numpy())


def test_n_slots_override(cli, checkpoint: Path, video: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = cli.run("infer.py", f"ckpt={checkpoint}", f"video={video}", f"out={out}", "n_slots=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(np.unique(np.load(out / "masks.npz")["masks"])) <= {0, 1, OUTSIDE}  # OUTSIDE: cropped off


def test_slots_carry_across_chunks(checkpoint: Path, video: Path):
    """Chunked inference equals one pass over the whole video, and differs from restarting each chunk."""
    model, _ = load_checkpoint_model(checkpoint)
    source = FrameSource(video)
    chunked = torch.cat([soft for _, soft in infer_video(model, source, chunk_size=4)])
    whole = torch.cat([soft for _, soft in infer_video(model, source, chunk_size=N_FRAMES)])
    restarted = torch.cat(
        [next(infer_video(model, _Window(source, s, 4), chunk_size=4))[1] for s in (0, 4, 8)]
    )
    assert chunked.shape == (N_FRAMES, model.grouper.n_slots, HEIGHT, WIDTH)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)
    assert (restarted[4:] - whole[4:]).abs().max() > 1e-3  # fresh slots per chunk give other masks


class _Window(FrameSource):
    """Frames [start, start + n) of a source, as if they were a video of their own."""

    def __init__(self, source: FrameSource, start: int, n: int) -> None:
        self.source, self.start = source, start
        self.n_frames = min(n, source.n_frames - start)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.source.read(self.start + start, self.start + stop)


@pytest.mark.parametrize("bad", ["missing", "garbage"])
def test_bad_video_is_one_line(cli, checkpoint: Path, tmp_path: Path, bad: str):
    path = tmp_path / "clip.mp4"
    if bad == "garbage":
        path.write_bytes(b"not a video")
    result = cli.run("infer.py", f"ckpt={checkpoint}", f"video={path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: video={path}")


def test_checkpoint_of_another_architecture(cli, checkpoint: Path, video: Path, tmp_path: Path):
    config = checkpoint.parent.parent / "config.yaml"
    other = tmp_path / "config.yaml"
    other.write_text(config.read_text().replace("slot_dim: 64", "slot_dim: 32"))
    result = cli.run("infer.py", f"ckpt={checkpoint}", f"config={other}", f"video={video}")
    assert result.returncode == 2
    assert "does not fit this model's architecture" in result.stderr.strip().splitlines()[-1]
