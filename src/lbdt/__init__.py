"""lbdt: referring video object segmentation with LBDT (CVPR 2022)."""

__version__ = "0.1.0"
