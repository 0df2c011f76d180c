"""Reading media for the model: any image mode becomes RGB; unreadable files are reported, not fatal.

Every way a file can fail to become model input is a MediaError naming the file: missing, a dangling
symlink, not a picture, truncated, a decompression bomb (more pixels than PIL's MAX_IMAGE_PIXELS), or an
aspect ratio the Qwen2-VL image processor refuses (over 200 : 1).
"""

from __future__ import annotations

from pathlib import Path
from struct import error as struct_error

from PIL import Image, ImageOps

from qadata.errors import MediaError, read_error
from qadata.video import video_pictures

__all__ = ["MediaError", "check_picture", "load_image", "load_pictures"]


MAX_ASPECT_RATIO = 200  # Qwen2-VL's smart_resize raises above this


def check_picture(path: str | Path, image: Image.Image) -> None:
    """MediaError when the model's image processor would refuse `image`'s size."""
    width, height = image.size
    if min(width, height) < 1:
        raise MediaError(f"{path}: picture is {width} x {height} pixels")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise MediaError(f"{path}: picture is {width} x {height} pixels, an aspect ratio over the image "
                         f"processor's limit of {MAX_ASPECT_RATIO} : 1")


def load_image(path: str | Path) -> Image.Image:
    """An RGB PIL image (grayscale, palette, RGBA, CMYK, 16-bit and float inputs converted)."""
    try:
        with Image.open(path) as image:
            pixels = image.width * image.height
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                raise MediaError(f"{path}: declares {image.width} x {image.height} = {pixels / 1e6:.0f} Mpx, over "
                                 f"PIL's limit of {Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx (a decompression bomb?)")
            check_picture(path, image)
            image = ImageOps.exif_transpose(image)
            image.load()
    except MediaError:
        raise
    except Image.DecompressionBombError as error:
        raise MediaError(f"{path}: refused as a decompression bomb ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, KeyError, IndexError, ZeroDivisionError,
            struct_error) as error:  # what PIL's format plugins raise on broken files
        raise read_error(f"{path}: cannot read image ({type(error).__name__}: {error})", error) from None
    if image.mode == "F":  # float TIFF: [0, 1] or already [0, 255]
        scale = 255.0 if image.getextrema()[1] <= 1 else 1.0
        image = image.point(lambda v: v * scale).convert("L")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def load_pictures(path: str | Path, kind: str, video) -> list[Image.Image]:
    """The pictures the model sees for one item: [image], or a video's [global grid, local frames...].

    video: a `qadata.video.VideoSettings` (used for videos only).
    """
    if kind == "image":
        return [load_image(path)]
    if kind == "video":
        try:
            pictures = video_pictures(path, video)
        except MediaError:
            raise
        except MemoryError:
            raise MediaError(f"{path}: ran out of memory decoding it; lower video.max_stream_pixels or "
                             "video.max_seconds to skip such files before decoding") from None
        except Exception as error:  # a decoder's own error type, on a file it could not make sense of
            raise MediaError(f"{path}: cannot read video ({type(error).__name__}: {str(error)[:200]})") from None
        for picture in pictures:
            check_picture(path, picture)
        return pictures
    raise MediaError(f"{path}: unknown media kind {kind!r}")
