import pytest

from lbdt.data.listfile import format_line, parse_line, read_list, write_list
from lbdt.data.records import ReferRecord
from lbdt.errors import LBDTError


def test_sentence_with_separators_parses_from_both_ends():
    r = parse_line("EadxBPmQvtg/00025,320,568,1,man, in a red shirt, rolling left,adult", "comma6", "l:1")
    assert (r.video_id, r.frame_id, r.object_id) == ("EadxBPmQvtg", "00025", "1")
    assert r.sentence == "man, in a red shirt, rolling left"
    assert r.category == "adult" and r.original_size == (320, 568)
    y = parse_line("abc123/00005#720#1280#2#a cat #1 with a ~ tail", "hash5", "l:1")
    assert y.sentence == "a cat #1 with a ~ tail" and y.object_id == "2"
    t = parse_line("abc123/00005~720~1280~2~a cat ~ a dog # two", "tilde5", "l:1")
    assert t.sentence == "a cat ~ a dog # two"


@pytest.mark.parametrize("fmt", ["comma6", "hash5", "tilde5"])
def test_round_trip(tmp_path, fmt):
    recs = [ReferRecord("v1", "00003", "4", "a, b # c ~ d", (240, 320), "motion" if fmt == "comma6" else ""),
            ReferRecord("w", "00010", "1", "plain", (10, 20), "appearance" if fmt == "comma6" else "")]
    n = write_list(tmp_path / "l.txt", recs, fmt)
    back = read_list(tmp_path / "l.txt", fmt)
    assert n == 2
    assert [(r.video_id, r.frame_id, r.object_id, r.sentence, r.original_size, r.category) for r in back] == [
        (r.video_id, r.frame_id, r.object_id, r.sentence, r.original_size, r.category) for r in recs]
    assert back[1].source_line.endswith("l.txt:2")


@pytest.mark.parametrize("line,msg", [
    ("vid/00001,320,568,1,sentence only", "6 ','-separated"),
    ("vid/00001,320", "expected 6"),
    ("vid/00001,h,568,1,a man,adult", "orig_h must be an integer"),
    ("vid00001,320,568,1,a man,adult", "<video>/<frame>"),
    ("vid/00001,320,568,1,  ,adult", "empty sentence"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, msg):
    p = tmp_path / "train.txt"
    p.write_text("ok/00001,1,1,1,fine,x\n" + line + "\n")
    with pytest.raises(LBDTError, match=rf"train.txt:2: .*{msg}"):
        read_list(p, "comma6")


def test_format_line_rejects_line_breaks():
    with pytest.raises(LBDTError):
        format_line(ReferRecord("v", "1", "1", "a\nb", (1, 1)), "hash5")
