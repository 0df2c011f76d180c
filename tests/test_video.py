"""The video data flow: global grid of N frames uniform in time + L full-resolution local frames, via decord."""

import numpy as np
import pytest
from PIL import Image

from launch.prediction import media_request
from qadata.media import MediaError
from qadata.video import VideoSettings, frames_at, uniform_times, video_pictures
from qadata.video_files import set_display_rotation, write_video


def numbered_clip(count: int, height: int = 64, width: int = 96) -> np.ndarray:
    """Frame k is flat grey at level 4k: which frames were sampled can be read back from the pixels."""
    levels = 4 * np.arange(count, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def level(picture: Image.Image, box=None) -> int:
    crop = picture.crop(box) if box else picture
    return int(round(np.asarray(crop, dtype=float)[2:-2, 2:-2].mean() / 4))


def cell_levels(grid: Image.Image, settings: VideoSettings, cell: tuple[int, int]) -> list[int]:
    cols, (w, h) = settings.grid_columns, cell
    corners = [((k % cols) * w, (k // cols) * h) for k in range(settings.global_frames)]
    return [level(grid, (x, y, x + w, y + h)) for x, y in corners]


def test_uniform_sampling_by_time():
    assert np.allclose(uniform_times(0, 10, 5), [1, 3, 5, 7, 9])
    starts = np.array([0.0, 0.1, 0.2, 1.0, 1.1])  # variable frame rate: a long frame at 0.2-1.0
    assert frames_at(starts, np.array([0.05, 0.5, 0.99, 1.05, 5.0])).tolist() == [0, 2, 2, 3, 4]


def test_grid_and_local_frames_come_from_the_right_times(tmp_path):
    path = write_video(tmp_path / "clip.mp4", numbered_clip(48), fps=24)
    settings = VideoSettings()
    pictures = video_pictures(path, settings)
    assert len(pictures) == 1 + settings.local_frames
    grid, *local = pictures
    cell = (28, 28)  # 96 x 0.25 = 24 and 64 x 0.25 = 16 are below one patch pair: cells are 28 px
    assert grid.size == (4 * cell[0], 4 * cell[1])
    assert cell_levels(grid, settings, cell) == [int(x) for x in (np.arange(16) + 0.5) * 3]
    assert [p.size for p in local] == [(96, 64)] * 3
    assert [level(p) for p in local] == [8, 24, 40]


def test_short_clip_repeats_frames_and_odd_sizes_work(tmp_path):
    path = write_video(tmp_path / "short.mp4", numbered_clip(5, 61, 97), fps=10)
    grid, *local = video_pictures(path, VideoSettings(cell_scale=0.5))
    assert grid.size == (4 * 48, 4 * 30)
    levels = cell_levels(grid, VideoSettings(), (48, 30))
    assert levels == sorted(levels) and set(levels) == {0, 1, 2, 3, 4}
    assert local[0].size == (97, 61)


def test_variable_frame_rate_is_sampled_evenly_in_time(tmp_path):
    # Frames 0-9 shown 0.1 s each, then frame 10 alone for 2 s: half the clip's time is frame 10.
    path = write_video(tmp_path / "vfr.mp4", numbered_clip(12), fps=10,
                       extra=["-vf", "setpts='if(lt(N,11),N,N+19)/10/TB'", "-fps_mode", "vfr"])
    grid, *_ = video_pictures(path, VideoSettings(global_frames=8, grid_columns=8, local_frames=1))
    levels = cell_levels(grid, VideoSettings(global_frames=8, grid_columns=8), (28, 28))
    assert levels.count(10) >= 3, levels  # by index it would be at most once


def test_rotation_metadata_is_applied(tmp_path):
    flat = write_video(tmp_path / "flat.mp4", numbered_clip(8, 64, 96), fps=10)
    rotated = set_display_rotation(flat, tmp_path / "rotated.mp4", 90)
    _, *local = video_pictures(rotated, VideoSettings(local_frames=1))
    assert local[0].size == (64, 96)


@pytest.mark.parametrize("content", [b"", b"this is text, not a video"])
def test_unreadable_videos_raise_media_error_with_the_path(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match="bad.mp4"):
        video_pictures(path)


def test_a_video_request_has_four_pictures_and_four_slots(tmp_path):
    path = write_video(tmp_path / "clip.mp4", numbered_clip(20), fps=10)
    request = media_request("v", str(path), "video", "vqa")
    slots = [c for c in request.messages[0]["content"] if c["type"] == "image"]
    assert len(request.images) == len(slots) == 4
