import numpy as np
import pytest
import torch

from lbdt.words import WordVectors, tokenize


@pytest.mark.parametrize(
    "sentence,expected",
    [
        ("The dog jumping on the left.", ["the", "dog", "jumping", "on", "the", "left"]),
        ("  a man, in red  ", ["a", "man", ", ", "in", "red"]),  # separators other than one space survive
        ("man's hat", ["man", "'", "s", "hat"]),
        ("ends with dots...", ["ends", "with", "dots", "..."]),  # only a final "." token is dropped
        ("A  B", ["a", "  ", "b"]),  # a double space is a separator token
        ("", []),
    ],
)
def test_tokenize_is_faithful(sentence, expected):
    assert tokenize(sentence) == expected


def test_tokenize_truncates_to_max_len():
    assert len(tokenize(" ".join(["w"] * 40))) == 25
    assert tokenize("a b c", max_len=2) == ["a", "b"]


def test_tokenize_without_separators():
    assert tokenize("a man, in red", keep_separators=False) == ["a", "man", "in", "red"]


def test_glove_text_loader_and_cache(tmp_path):
    path = tmp_path / "glove.test.3d.txt"
    path.write_text("dog 1 2 3\n. . . 4 5 6\ncat -1 0.5 0\n", encoding="utf-8")
    wv = WordVectors.from_glove(path, dim=3)
    assert wv.dim == 3 and len(wv) == 3 and ". . ." in wv
    vec, mask = wv.encode("The Dog, cat", max_len=5)
    assert mask.tolist() == [1, 1, 1, 1, 0]
    np.testing.assert_allclose(vec.numpy(), [[0, 0, 0], [1, 2, 3], [0, 0, 0], [-1, 0.5, 0], [0, 0, 0]])
    assert (tmp_path / "glove.test.3d.txt.vectors.npy").is_file()
    again = WordVectors.from_glove(path, dim=3)  # served from the binary cache
    assert torch.equal(again.lookup(["cat", "dog"]), wv.lookup(["cat", "dog"]))


def test_glove_rejects_malformed_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("dog 1 2 3\ncat 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        WordVectors.from_glove(path, dim=3)


def test_seeded_table_is_deterministic_and_order_free():
    a = WordVectors.seeded(["red", "circle", "left"], dim=300, seed=7)
    b = WordVectors.seeded(["left", "red"], dim=300, seed=7)
    assert torch.equal(a.lookup(["red", "left"]), b.lookup(["red", "left"]))
    assert not torch.equal(a.lookup(["red"]), WordVectors.seeded(["red"], seed=8).lookup(["red"]))
    assert a.lookup(["unknown"]).abs().sum() == 0


def test_coverage_names_unknown_tokens_and_their_share():
    wv = WordVectors.seeded(["the", "man", "in", "red"])
    c = wv.coverage("The man, in a red car.")
    assert c.tokens == ("the", "man", ", ", "in", "a", "red", "car")
    assert c.unknown == (", ", "a", "car") and c.unknown_fraction == 3 / 7 and not c.none_known
    assert wv.coverage("a bike").none_known and wv.coverage("a bike").unknown_fraction == 1.0
    assert wv.coverage("the man in red " + "red " * 30, max_len=4).unknown == ()  # cut as encode cuts
