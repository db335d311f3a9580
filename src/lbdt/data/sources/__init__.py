"""Dataset sources: a dataset root → records, frames, masks, reference frames. `SOURCES` maps format → class."""

from lbdt.data.sources.a2d import A2DSource
from lbdt.data.sources.base import Source
from lbdt.data.sources.davis import DAVISSource
from lbdt.data.sources.jhmdb import JHMDBSource
from lbdt.data.sources.longrvos import LongRVOSSource
from lbdt.data.sources.mevis import MeViSSource
from lbdt.data.sources.ytvos import YTVOSSource

SOURCES: dict[str, type[Source]] = {"a2d": A2DSource, "jhmdb": JHMDBSource, "ytvos": YTVOSSource,
                                  "davis": DAVISSource, "mevis": MeViSSource, "longrvos": LongRVOSSource}

__all__ = ["SOURCES", "A2DSource", "DAVISSource", "JHMDBSource", "LongRVOSSource", "MeViSSource", "Source",
           "YTVOSSource"]
