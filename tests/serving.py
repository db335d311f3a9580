"""The `lbdt serve` app for tests: one instance per test module on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_app(tmp_path_factory, *, max_seconds: float) -> Iterator:
    """Start synthetic-tiny's page (fp32, 0.2 MB uploads, `max_seconds` videos) on 127.0.0.1; stop it afterwards."""
    pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")
    from lbdt.tools.serve import Limits, build_app

    served = build_app("synthetic-tiny", precision="fp32", limits=Limits(max_upload_mb=0.2, max_seconds=max_seconds),
                       workdir=tmp_path_factory.mktemp("serve"))
    served.start("127.0.0.1", free_port())
    yield served
    served.close()
