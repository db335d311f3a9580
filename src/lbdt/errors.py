"""The one exception type users see for bad input, and the rule for when to raise it.

The rule, followed by every module:

* **Bad user input** (a CLI argument, a config field, a file or folder and its contents, an argument of the
  public Python API: `VideoSegmenter`, `WordVectors`, `open_video`, the dataset sources, the metrics) raises
  `LBDTError` where the input enters, with a **one-line** message naming the input (the file, and its line or
  field where there is one; the option or argument name otherwise) and the problem, e.g.
  `list.txt:3: video id '../x' must be a plain name` or `--threshold: must be in [0, 1], got 5.0`.
  The CLI prints it as `lbdt <command>: error: <message>` and exits 2, never with a traceback.
* **Programming errors** (a broken invariant inside lbdt, a wrong type passed between internal functions) raise
  the ordinary exception (`TypeError`, `ValueError`, `AssertionError`, ...) and keep their traceback: they are
  bugs to report, not input to fix.

`LBDTError` subclasses `ValueError`, so callers that catch `ValueError` for bad values keep working.

What a user should know before a run starts but that does not stop it (a demonstration model, unknown or cut
words, the device and precision chosen and why) is an `LBDTNotice`, a `UserWarning`: the Python API warns with
it, and the CLI prints the same text as `lbdt: ...` lines on stderr and records it in its JSON.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LBDTError(ValueError):
    """Bad input (a file, a value, a configuration). The CLI prints it as one line, no traceback."""


class LBDTNotice(UserWarning):
    """Something to know before the work starts (filter with `warnings.filterwarnings("ignore", category=LBDTNotice)`)."""


def did_you_mean(given: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the choice closest to a mistyped `given` (a typo, `_` for `-`), else ''."""
    choices = list(choices)
    folded = {c.lower().replace("_", "-"): c for c in choices}
    key = str(given).lower().replace("_", "-")
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.75)
    if not close and len(key) >= 3:  # a prefix of exactly one choice ("glove" for "glove-840b")
        close = [c for c in folded if c.startswith(key)][:2]
        close = close if len(close) == 1 else []
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""
