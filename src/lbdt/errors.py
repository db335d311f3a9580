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


class LBDTError(ValueError):
    """Bad input (a file, a value, a configuration). The CLI prints it as one line, no traceback."""


class LBDTNotice(UserWarning):
    """Something to know before the work starts (filter with `warnings.filterwarnings("ignore", category=LBDTNotice)`)."""
