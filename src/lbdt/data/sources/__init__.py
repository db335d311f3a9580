"""Dataset sources: a dataset root → records, frames, masks, reference frames, and the dataset's facts.

`SOURCES` (format name → class) is the one list of datasets: the configuration's `data.dataset` choices, the
CLI's `--dataset` / `--format` choices and the engine read it, and nothing else names datasets.
"""

from lbdt.data.sources.a2d import A2DSource
from lbdt.data.sources.base import Source
from lbdt.data.sources.davis import DAVISSource
from lbdt.data.sources.jhmdb import JHMDBSource
from lbdt.data.sources.mevis import MeViSSource
from lbdt.data.sources.ytvos import YTVOSSource

SOURCES: dict[str, type[Source]] = {s.name: s for s in (A2DSource, JHMDBSource, YTVOSSource, DAVISSource,
                                                         MeViSSource)}

__all__ = ["SOURCES", "A2DSource", "DAVISSource", "JHMDBSource", "MeViSSource", "Source", "YTVOSSource"]
