"""The video data flow: global grid of N frames uniform in time + L full-resolution local frames.

Each behaviour is checked with both decoders (PyAV with frame skipping, decord): the same frames, pixel for pixel."""

import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers import video_settings
from qadata.benchmark_set import pan_clip
from qadata.generated import photo_pixels
from qadata.media import MediaError
from qadata.requests import media_request
from qadata.sparse_decode import read_frames, to_rgb
from qadata.video import frames_at, sampled, uniform_times, video_pictures
from qadata.video_files import ffmpeg, set_display_rotation, write_video

DECODERS = ["pyav", "decord"]


def numbered_clip(count: int, height: int = 64, width: int = 96) -> np.ndarray:
    """Frame k is flat grey at level 5k: which frames were sampled can be read back from the pixels."""
    levels = 5 * np.arange(count, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def level(picture: Image.Image, box=None) -> int:
    crop = picture.crop(box) if box else picture
    return int(round(np.asarray(crop, dtype=float)[2:-2, 2:-2].mean() / 5))


def cell_levels(grid: Image.Image, settings, cell: tuple[int, int]) -> list[int]:
    cols, (w, h) = settings.grid_columns, cell
    corners = [((k % cols) * w, (k // cols) * h) for k in range(settings.global_frames)]
    return [level(grid, (x, y, x + w, y + h)) for x, y in corners]


def test_uniform_sampling_by_time():
    assert np.allclose(uniform_times(0, 10, 5), [1, 3, 5, 7, 9])
    starts = np.array([0.0, 0.1, 0.2, 1.0, 1.1])  # variable frame rate: a long frame at 0.2-1.0
    assert frames_at(starts, np.array([0.05, 0.5, 0.99, 1.05, 5.0])).tolist() == [0, 2, 2, 3, 4]


@pytest.mark.parametrize("decoder", DECODERS)
def test_grid_and_local_frames_come_from_the_right_times(tmp_path, decoder):
    path = write_video(tmp_path / "clip.mp4", numbered_clip(48), fps=24)
    settings = video_settings(decoder=decoder)
    pictures = video_pictures(path, settings)
    assert len(pictures) == 1 + settings.local_frames
    grid, *local = pictures
    cell = (28, 28)  # 96 x 0.25 = 24 and 64 x 0.25 = 16 are below one patch pair: cells are 28 px
    assert grid.size == (4 * cell[0], 4 * cell[1])
    assert cell_levels(grid, settings, cell) == [int(x) for x in (np.arange(16) + 0.5) * 3]
    assert [p.size for p in local] == [(96, 64)] * 3
    assert [level(p) for p in local] == [8, 24, 40]


@pytest.mark.parametrize("decoder", DECODERS)
def test_short_clip_repeats_frames_and_odd_sizes_work(tmp_path, decoder):
    path = write_video(tmp_path / "short.mp4", numbered_clip(5, 61, 97), fps=10)
    grid, *local = video_pictures(path, video_settings(cell_scale=0.5, decoder=decoder))
    assert grid.size == (4 * 48, 4 * 30)
    levels = cell_levels(grid, video_settings(), (48, 30))
    assert levels == sorted(levels) and set(levels) == {0, 1, 2, 3, 4}
    assert local[0].size == (97, 61)


@pytest.mark.parametrize("decoder", DECODERS)
def test_variable_frame_rate_is_sampled_evenly_in_time(tmp_path, decoder):
    # Frames 0-9 shown 0.1 s each, then frame 10 alone for 2 s: half the clip's time is frame 10.
    path = write_video(tmp_path / "vfr.mp4", numbered_clip(12), fps=10,
                       extra=["-vf", "setpts='if(lt(N,11),N,N+19)/10/TB'", "-fps_mode", "vfr"])
    grid, *_ = video_pictures(path, video_settings(global_frames=8, grid_columns=8, local_frames=1, decoder=decoder))
    levels = cell_levels(grid, video_settings(global_frames=8, grid_columns=8), (28, 28))
    assert levels.count(10) >= 3, levels  # by index it would be at most once


@pytest.mark.parametrize("degrees", [90, 180, -90])
def test_rotation_metadata_is_applied(tmp_path, degrees):
    clip = numbered_clip(8, 64, 96)
    clip[:, :32, :48] = 255  # a white top-left corner shows which way the picture was turned
    flat = write_video(tmp_path / "flat.mp4", clip, fps=10)
    rotated = set_display_rotation(flat, tmp_path / "rotated.mp4", degrees)
    upright = {d: np.asarray(video_pictures(rotated, video_settings(local_frames=1, decoder=d))[1]) for d in DECODERS}
    assert upright["pyav"].shape == ((96, 64, 3) if degrees % 180 else (64, 96, 3))
    assert np.array_equal(upright["pyav"], upright["decord"])
    original = np.asarray(video_pictures(flat, video_settings(local_frames=1))[1])
    assert np.array_equal(upright["pyav"], np.rot90(original, degrees // 90))  # ffmpeg: counter-clockwise


def test_decoders_agree_pixel_for_pixel_and_pyav_skips_unreferenced_frames(tmp_path):
    """A panning clip with B-frames and a keyframe every 30 frames, as x264 writes by default."""
    clip = pan_clip(photo_pixels("coffee"), 96, 96, np.random.default_rng(0), width=160)
    path = write_video(tmp_path / "pan.mp4", clip, fps=30, crf=28, extra=["-g", "30"])
    settings = video_settings(cell_scale=0.5)
    pictures = {d: [np.asarray(p, dtype=float) for p in video_pictures(path, video_settings(cell_scale=0.5, decoder=d))]
                for d in DECODERS}
    for a, b in zip(pictures["pyav"][1:], pictures["decord"][1:]):
        assert np.array_equal(a, b)  # full-resolution frames: the same decoded pixels
    grid_a, grid_b = pictures["pyav"][0], pictures["decord"][0]  # cells: swscale's bilinear vs PIL's
    assert grid_a.shape == grid_b.shape and np.abs(grid_a - grid_b).mean() < 2.0
    counts = {}
    frames = read_frames(path, lambda starts, end: np.concatenate(sampled(starts, end, settings)), counts)
    assert len(frames) == 19 and counts["frames"] == 96 and not counts["fallback"]
    assert counts["decoded"] < 0.75 * counts["frames"], counts  # about half the frames are never decoded


def test_a_stream_without_timestamps_is_read_in_output_order(tmp_path):
    """A raw H.264 stream has no container timestamps: the fallback decodes twice and picks by frame order."""
    mp4 = write_video(tmp_path / "numbered.mp4", numbered_clip(48), fps=24)
    raw = tmp_path / "numbered.h264"
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-i", str(mp4), "-c", "copy", "-f", "h264", str(raw)],
                   check=True)
    counts = {}
    frames = read_frames(raw, lambda starts, end: np.array([0, 23, 47]), counts)
    assert counts["fallback"] and counts["frames"] == 48
    assert [level(Image.fromarray(to_rgb(f))) for f in frames] == [0, 23, 47]


@pytest.mark.parametrize("content", [b"", b"this is text, not a video"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_unreadable_videos_raise_media_error_with_the_path(tmp_path, decoder, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match="bad.mp4"):
        video_pictures(path, video_settings(decoder=decoder))


def test_a_video_request_has_four_pictures_and_four_slots(tmp_path):
    path = write_video(tmp_path / "clip.mp4", numbered_clip(20), fps=10)
    request = media_request("v", str(path), "video", "vqa", video_settings())
    slots = [c for c in request.messages[0]["content"] if c["type"] == "image"]
    assert len(request.images) == len(slots) == 4


def zero_frame_avi(path):
    """A valid AVI whose H.264 stream holds no frame (the header is written, nothing is encoded)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    return path


def audio_only_mp4(path):
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(path)],
                   check=True)
    return path


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("make", [zero_frame_avi, audio_only_mp4])
def test_containers_without_frames_raise_media_error_with_the_path(tmp_path, decoder, make):
    path = make(tmp_path / f"empty{'.avi' if make is zero_frame_avi else '.mp4'}")
    with pytest.raises(MediaError, match="empty"):
        video_pictures(path, video_settings(decoder=decoder))


def test_videos_over_the_limits_are_refused_from_their_headers_before_decoding(tmp_path):
    # A few bytes declaring 16000 x 8000 frames (YUV4MPEG2: a text header, then one frame's marker); FFmpeg
    # itself refuses to open one that declares 16384 x 16384, which is a MediaError too.
    crafted = tmp_path / "huge.y4m"
    crafted.write_bytes(b"YUV4MPEG2 W16000 H8000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(64))
    with pytest.raises(MediaError, match=r"huge\.y4m: declares 16000 x 8000 frames, over video\.max_stream_pixels"):
        video_pictures(crafted, video_settings())
    crafted.write_bytes(b"YUV4MPEG2 W16384 H16384 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(64))
    with pytest.raises(MediaError, match=r"huge\.y4m: cannot read video"):
        video_pictures(crafted, video_settings())
    # An hour of a 16-pixel test pattern: a small file, 3,600 frames.
    hour = tmp_path / "hour.mp4"
    subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=16x16:rate=1",
                    "-t", "3600", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(hour)], check=True, timeout=300)
    assert hour.stat().st_size < 2**20
    with pytest.raises(MediaError, match=r"hour\.mp4: 3600 s long, over video\.max_seconds = 600"):
        video_pictures(hour, video_settings())
    assert len(video_pictures(hour, video_settings(max_seconds=4000))) == 4  # within a raised limit it is read
    with pytest.raises(MediaError, match=r"hour\.mp4: 0 MiB, over video\.max_bytes = 1000"):
        video_pictures(hour, video_settings(max_bytes=1000, max_seconds=4000))


def test_a_read_error_that_may_pass_is_retried_and_never_remembered(generated_data, monkeypatch):
    import errno

    from PIL import Image as PIL

    import qadata.requests as requests
    from helpers import base_config
    from qadata.errors import TransientMediaError
    from qadata.requests import RunData

    data = RunData(base_config(f"data.train_manifest={generated_data}"))
    item, opened, failures = data.train[0], [], [2]
    real_open = PIL.open

    def flaky_open(path, *args, **kwargs):
        opened.append(path)
        if failures[0] > 0:
            failures[0] -= 1
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(requests, "TRANSIENT_WAIT_S", 0.01)
    monkeypatch.setattr("qadata.media.Image.open", flaky_open)
    assert data.load(item).item_id == item.item_id and len(opened) == 3 and data.skipped == {}
    failures[0] = 10  # down for longer than the tries: passed over this time, tried again the next
    with pytest.raises(TransientMediaError, match="Input/output error"):
        data.load(item)
    assert data.skipped == {} and len(opened) == 6
    failures[0] = 0
    assert data.load(item).item_id == item.item_id
