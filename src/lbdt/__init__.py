"""lbdt: referring video object segmentation with LBDT (CVPR 2022)."""

__version__ = "0.1.0"

# Public names, imported lazily so `import lbdt` (and `lbdt --help`) does not load torch.
# name -> module that defines it; one line per name, one block per area.
_LAZY = {
    # models
    "build_model": "lbdt.models.build",
    "LBDT": "lbdt.models.lbdt",
    "load_official": "lbdt.models.official",
    # inference
    "VideoSegmenter": "lbdt.predictor",
    "load_pretrained": "lbdt.pretrained",
    # notices (Python warnings) from VideoSegmenter
    "LBDTNotice": "lbdt.errors",
}
__all__ = ["LBDT", "LBDTNotice", "VideoSegmenter", "__version__", "build_model", "load_official", "load_pretrained"]  # = _LAZY


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lbdt' has no attribute {name!r}")
