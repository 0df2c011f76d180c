"""Reading media for the model: any image mode becomes RGB; unreadable files are reported, not fatal."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps


class MediaError(ValueError):
    """An item whose media cannot be read; carries the path."""


def load_image(path: str | Path) -> Image.Image:
    """An RGB PIL image (grayscale, palette, RGBA, CMYK and 16-bit inputs converted)."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise MediaError(f"{path}: cannot read image ({error})") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def load_pictures(path: str | Path, kind: str, video=None) -> list[Image.Image]:
    """The pictures the model sees for one item: [image], or a video's [global grid, local frames...].

    video: a `qadata.video.VideoSettings` (its defaults when None).
    """
    if kind == "image":
        return [load_image(path)]
    if kind == "video":
        from qadata.video import VideoSettings, video_pictures

        return video_pictures(path, video or VideoSettings())
    raise MediaError(f"{path}: unknown media kind {kind!r}")
