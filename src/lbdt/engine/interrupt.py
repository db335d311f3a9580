"""Ctrl-C during training: the first SIGINT asks the loop to stop at its next step boundary (it then saves
`last.pt` and says where); a second one interrupts at once, as Python normally does."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class StopRequest:
    """Set by the first SIGINT while `sigint_requests_stop` is active."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def sigint_requests_stop() -> Iterator[StopRequest]:
    """While active (main thread only; elsewhere the flag is never set): SIGINT sets `.requested` instead of
    raising KeyboardInterrupt, and puts back the previous handler, so a second Ctrl-C interrupts at once."""
    flag = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame) -> None:
        flag.requested = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def until_stopped(items: Iterable[T], flag: StopRequest) -> Iterator[T]:
    """`items` until `flag` is set (checked before each item). Data-loader workers share the terminal's
    process group, so the same Ctrl-C stops them: an error fetching the next item after the request ends
    the iteration instead of the run."""
    it = iter(items)
    while not flag.requested:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception:
            if flag.requested:
                return
            raise
        yield item
