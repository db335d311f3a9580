"""Robust reading and writing of the original project's list files (docs/datasets/).

The original split each line on its separator and so broke on sentences containing it. Here the fixed
fields are taken from both ends of the line and whatever lies between is the sentence, so any sentence
round-trips. A malformed line is an error naming the file and the line number.

Formats (fields in order):
* ``comma6`` (A2D, J-HMDB): ``video/frame, orig_h, orig_w, instance_id, sentence, category``
* ``hash5`` (Ref-YTVOS ``train.txt``, ``valid_new_pure.txt``): ``video/frame#orig_h#orig_w#obj_id#expression``
* ``tilde5`` (Ref-YTVOS local ``val.txt``): the same five fields separated by ``~``
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from lbdt.data.records import ReferRecord
from lbdt.errors import LBDTError
from lbdt.io import read_text, write_text
from lbdt.paths import check_name
from lbdt.words import check_sentence

SEPARATORS = {"comma6": ",", "hash5": "#", "tilde5": "~"}


def _int_field(value: str, name: str, where: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise LBDTError(f"{where}: {name} must be an integer, got {value.strip()!r}") from None
    if n <= 0:
        raise LBDTError(f"{where}: {name} must be positive, got {n}")
    return n


def parse_line(line: str, fmt: str, where: str) -> ReferRecord:
    """Parse one list line. `where` ("file:line") prefixes every error message."""
    if fmt not in SEPARATORS:
        raise ValueError(f"unknown list format {fmt!r}; expected one of {sorted(SEPARATORS)}")
    sep = SEPARATORS[fmt]
    head = line.split(sep, 4)  # video/frame, h, w, id, rest
    if len(head) < 5:
        raise LBDTError(f"{where}: expected {'6' if fmt == 'comma6' else '5'} {sep!r}-separated fields, "
                        f"got {len(head)}: {line!r}")
    key, h, w, obj, rest = head
    category = ""
    if fmt == "comma6":
        if sep not in rest:
            raise LBDTError(f"{where}: expected 6 ','-separated fields (… sentence, category), got 5: {line!r}")
        rest, category = rest.rsplit(sep, 1)
        category = category.strip()
    key = key.strip()
    if "/" not in key:
        raise LBDTError(f"{where}: first field must be <video>/<frame>, got {key!r}")
    video_id, frame_id = key.rsplit("/", 1)
    if not video_id or not frame_id:
        raise LBDTError(f"{where}: first field must be <video>/<frame>, got {key!r}")
    check_name(video_id, "video id", where)  # ids become path parts (frames, masks, written masks, zip entries)
    check_name(frame_id, "frame id", where)
    sentence = rest.strip()
    check_sentence(sentence, where)
    obj = obj.strip()
    check_name(obj, "object id", where)
    size = (_int_field(h, "orig_h", where), _int_field(w, "orig_w", where))
    return ReferRecord(video_id=video_id, frame_id=frame_id, object_id=obj, sentence=sentence,
                       original_size=size, category=category, source_line=where)


def read_list(path: str | os.PathLike, fmt: str) -> list[ReferRecord]:
    """All records of a list file; blank lines are skipped, anything else malformed is an error."""
    path = Path(path)
    text = read_text(path, "list file")
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            records.append(parse_line(line, fmt, f"{path}:{lineno}"))
    return records


def format_line(record: ReferRecord, fmt: str) -> str:
    """The list line for a record (inverse of `parse_line`)."""
    sep = SEPARATORS[fmt]
    if "\n" in record.sentence or "\r" in record.sentence:
        raise LBDTError(f"sentence contains a line break: {record.sentence!r}")
    h, w = record.original_size
    fields = [f"{record.video_id}/{record.frame_id}", str(h), str(w), record.object_id, record.sentence.strip()]
    if fmt == "comma6":
        if sep in record.category:
            raise LBDTError(f"category may not contain ',': {record.category!r}")
        fields.append(record.category)
    return sep.join(fields)


def write_list(path: str | os.PathLike, records: Iterable[ReferRecord], fmt: str) -> int:
    """Write a list file atomically; returns the number of lines."""
    lines = [format_line(r, fmt) for r in records]
    write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)
