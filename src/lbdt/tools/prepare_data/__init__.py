"""`lbdt prepare-data`: build the original project's dataset layout and list files from the official releases.

The original LBDT shipped no preparation scripts; these builders produce exactly the layout the original
code reads (docs/datasets/*.md, "Preparing from the official release").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lbdt.errors import LBDTError
from lbdt.paths import check_input_path, check_output_dir
from lbdt.tools.prepare_data.a2d import prepare_a2d
from lbdt.tools.prepare_data.common import PrepareSummary
from lbdt.tools.prepare_data.davis import prepare_davis
from lbdt.tools.prepare_data.jhmdb import prepare_jhmdb
from lbdt.tools.prepare_data.longrvos import prepare_longrvos
from lbdt.tools.prepare_data.mevis import prepare_mevis
from lbdt.tools.prepare_data.ytvos import prepare_ytvos

PREPARERS = {"a2d": prepare_a2d, "jhmdb": prepare_jhmdb, "ytvos": prepare_ytvos, "davis": prepare_davis,
             "mevis": prepare_mevis, "longrvos": prepare_longrvos}


def prepare_dataset(name: str, raw: str | Path, out: str | Path, **options: Any) -> PrepareSummary:
    """Run the builder for dataset `name` (a key of `PREPARERS`); `options` are its keyword arguments."""
    check_output_dir(out)  # before any work (lbdt.paths)
    if name not in PREPARERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(PREPARERS)}")
    if not check_input_path(raw, "--raw").is_dir():  # '' is refused, not read as the current folder
        raise LBDTError(f"raw release folder not found: {raw}")
    return PREPARERS[name](raw, out, **options)


__all__ = ["PREPARERS", "PrepareSummary", "prepare_a2d", "prepare_dataset", "prepare_davis", "prepare_jhmdb",
           "prepare_longrvos", "prepare_mevis", "prepare_ytvos"]
