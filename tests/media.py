"""Video files for tests, written with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 25, lossless: bool = True) -> None:
    """An .mp4 of uint8 [H,W,3] frames. Lossless H.264 (yuv444p, which also allows odd sizes) so decoded
    pixels can be compared exactly; `lossless=False` writes MPEG-4 part 2 (yuv420p, even sizes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        if lossless:
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt, stream.options = "yuv444p", {"crf": "0", "preset": "ultrafast"}
        else:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.pix_fmt, stream.options = "yuv420p", {"qscale": "2"}
        stream.height, stream.width = frames[0].shape[:2]
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
