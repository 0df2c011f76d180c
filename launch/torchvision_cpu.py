"""Makes PyPI's CUDA-built torchvision importable next to CPU torch (vLLM's Qwen2.5-VL code needs it).

torchvision's C ops need libtorch_cuda.so and do not load next to CPU torch; its Python code then
registers fake kernels for `torchvision::nms` and `torchvision::qnms`, which fails because those ops
were never declared. Declaring their schemas first lets it import, with its pure-Python transforms
working; nothing on preresq's path calls a C op.

`python launch/torchvision_cpu.py SITE_PACKAGES` writes a module and a .pth file there, so every
Python process of that environment arms an import hook (vLLM inspects model classes in a subprocess).
The hook declares the schemas only when torchvision is first imported, and only under a CPU build
of torch, so other processes do not pay for importing torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

MODULE = "preresq_torchvision_cpu"
HOOK = '''"""Written by preresq (launch/torchvision_cpu.py): declares torchvision's two fake-kernel ops
before torchvision is imported under a CPU build of torch, so that its import succeeds."""
import importlib.abc
import sys

_LIBRARY = None


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            declare()
        return None


def declare():
    global _LIBRARY
    import torch

    if torch.version.cuda is not None or _LIBRARY is not None:
        return
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _LIBRARY.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


if "torchvision" not in sys.modules:
    sys.meta_path.insert(0, _DeclareTorchvisionOps())
'''


def install(site_packages: str | Path) -> Path:
    """Write the hook module and its .pth file into `site_packages`; returns the .pth path."""
    folder = Path(site_packages)
    if not folder.is_dir():
        raise FileNotFoundError(f"site-packages folder not found: {folder}")
    (folder / f"{MODULE}.py").write_text(HOOK)
    pth = folder / f"{MODULE}.pth"
    pth.write_text(f"import {MODULE}\n")
    return pth


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python launch/torchvision_cpu.py SITE_PACKAGES")
    print(f"wrote {install(sys.argv[1])}")
