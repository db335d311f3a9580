"""The `lbdt serve` app for tests: one instance per test module on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_app(tmp_path_factory, **limits) -> Iterator:
    """Start synthetic-tiny's page (fp32; `lbdt.tools.serve.Limits(**limits)`) on 127.0.0.1; stop it afterwards."""
    pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")
    from lbdt.tools.serve import Limits, build_app

    served = build_app("synthetic-tiny", precision="fp32", limits=Limits(**limits),
                       workdir=tmp_path_factory.mktemp("serve"))
    served.start("127.0.0.1", free_port())
    yield served
    served.close()
