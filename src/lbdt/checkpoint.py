"""lbdt's checkpoint format, and `Runnable`: a model together with the facts needed to run it.

This module is the one owner of the format: training, `lbdt convert-official`, `lbdt download`, the export
of a slim inference checkpoint and every loader go through `make_state` / `save_checkpoint` /
`read_checkpoint`. A checkpoint is one `torch.save`d dict of plain types and tensors, read with
`weights_only=True`, written atomically (temp file, fsync, `os.replace`):

====================  ========  =================================================================
field                 type      meaning
====================  ========  =================================================================
format                str       always "lbdt"
version               int       format version (this lbdt reads 1)
variant               str       model variant name (lbdt4, lbdt1, lbdt4_r101, tiny)
model_config          dict      `LBDT.config`, rebuilds the network
model                 dict      state dict (tensors)
config                dict      the run configuration (`RunConfig` as a dict); run facts come from `data`
source                str       where the weights came from (optional)
card                  dict      model card (optional): training data, metrics, limitations, license
word_vectors          dict      embedded word table (optional): `words` list[str], `vectors` [V,300]
word_table            str       the table to use when none is embedded (optional): a `lbdt download` name
                                (e.g. "glove-840b"), or a file name
optimizer, scheduler  dict      training state (training checkpoints only, with scaler, epoch, step,
scaler, epoch, step,            epoch_batches, rng, best, history); `--resume` needs all of them
epoch_batches, rng,
best, history
====================  ========  =================================================================

A field of the wrong type is an `LBDTError` naming the file and the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lbdt.data.sources import SOURCES
from lbdt.data.synth import vocabulary
from lbdt.errors import LBDTError
from lbdt.io import load_weights, save_torch
from lbdt.models.lbdt import LBDT
from lbdt.models.strict_load import load_strict
from lbdt.runtime import InferenceSetup
from lbdt.words import MAX_WORDS, WordVectors

FORMAT = "lbdt"
VERSION = 1
DEFAULT_SIZE = (320, 320)
# reference-frame gap k for a user video (raw frames at 25-30 fps) by training dataset (docs/model.md):
# A2D annotates every 5th-6th raw frame and uses t-6 raw frames; Ref-YouTube-VOS stores every 5th raw frame
# and uses the previous stored one, i.e. 5 raw frames.
DEFAULT_FRAME_GAP = 6  # k in raw frames when the dataset is unknown (A2D's, the paper's)

_INT = (int,)
# field -> (allowed types, required)
_INFERENCE_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True), "version": (_INT, True), "variant": ((str,), True),
    "model_config": ((Mapping,), True), "model": ((Mapping,), True), "config": ((Mapping,), False),
    "source": ((str,), False), "card": ((Mapping,), False), "word_vectors": ((Mapping,), False),
    "word_table": ((str,), False),
}
TRAINING_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "optimizer": ((Mapping,), True), "scheduler": ((Mapping,), True), "scaler": ((Mapping,), True),
    "epoch": (_INT, True), "step": (_INT, True), "epoch_batches": (_INT, True), "rng": ((Mapping,), True),
    "best": ((Mapping, type(None)), True), "history": ((list,), True),
}


def _type_names(types: tuple[type, ...]) -> str:
    names = {Mapping: "dict", type(None): "None"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_field(state: Mapping, name: str, types: tuple[type, ...], required: bool, where: str) -> None:
    if name not in state:
        if required:
            raise LBDTError(f"{where}: lbdt checkpoint has no {name!r} field")
        return
    value = state[name]
    if isinstance(value, bool) or not isinstance(value, types):  # bool is an int subclass: never a valid int here
        raise LBDTError(f"{where}: field {name!r} must be {_type_names(types)}, got {type(value).__name__}")


def validate_state(state: Any, where: str, *, training: bool = False) -> dict:
    """Check `state` against the schema (module docstring); `training` also requires the training fields."""
    if not isinstance(state, Mapping):
        raise LBDTError(f"{where}: not an lbdt checkpoint (a {type(state).__name__}, not a dict)")
    if state.get("format") != FORMAT:
        raise LBDTError(f"{where}: not an lbdt checkpoint (no format: {FORMAT!r} entry)")
    for name, (types, required) in _INFERENCE_FIELDS.items():
        _check_field(state, name, types, required, where)
    if state["version"] > VERSION or state["version"] < 1:
        raise LBDTError(f"{where}: checkpoint version {state['version']} is not readable by this lbdt "
                        f"(it reads version {VERSION})")
    if not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state["model"].items()):
        raise LBDTError(f"{where}: field 'model' must map parameter names to tensors")
    data = state.get("config", {}).get("data", {})
    if not isinstance(data, Mapping):
        raise LBDTError(f"{where}: field 'config.data' must be a dict, got {type(data).__name__}")
    table = state.get("word_vectors")
    if table is not None:
        words, vectors = table.get("words"), table.get("vectors")
        if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
            raise LBDTError(f"{where}: field 'word_vectors.words' must be a list of strings")
        if not (isinstance(vectors, Tensor) and vectors.dim() == 2 and vectors.shape[0] == len(words)):
            raise LBDTError(f"{where}: field 'word_vectors.vectors' must be a [{len(words)}, D] tensor")
    present = [k for k in TRAINING_FIELDS if k in state]
    if training or present:
        if not present:
            raise LBDTError(f"{where}: an inference-only checkpoint (no optimizer state, e.g. exported or shipped "
                            "weights): it cannot be resumed; start a new run instead")
        for name, (types, required) in TRAINING_FIELDS.items():
            _check_field(state, name, types, required, where)
    return dict(state)


def make_state(model: LBDT, *, variant: str, config: Mapping | None = None, source: str | None = None,
               card: Mapping | None = None, word_vectors: WordVectors | None = None, word_table: str | None = None,
               training: Mapping[str, Any] | None = None) -> dict:
    """The checkpoint dict of `model` (its weights as they are; pass the unwrapped model, not DDP)."""
    state: dict[str, Any] = {"format": FORMAT, "version": VERSION, "variant": variant,
                             "model_config": dict(model.config), "model": model.state_dict()}
    if config is not None:
        state["config"] = dict(config)
    if source is not None:
        state["source"] = source
    if card is not None:
        state["card"] = dict(card)
    if word_vectors is not None:
        state["word_vectors"] = {"words": list(word_vectors.words),
                                 "vectors": torch.as_tensor(word_vectors.vectors).float().contiguous()}
    if word_table is not None:
        state["word_table"] = word_table
    if training is not None:
        state.update(training)
    return state


def save_checkpoint(state: Mapping, path: str | os.PathLike) -> None:
    """Validate `state` and write it atomically with fsync: a kill at any point leaves the old file or the new one."""
    validate_state(state, str(path))
    save_torch(dict(state), path, fsync=True)


def read_checkpoint(path: str | os.PathLike, *, training: bool = False) -> dict:
    """Read and validate an lbdt checkpoint; `training=True` (for `--resume`) requires the training state."""
    return validate_state(load_weights(path), str(path), training=training)


@dataclass
class Runnable:
    """A model ready for inference together with the facts needed to run it.

    `load_pretrained` makes one from any weights lbdt knows; `VideoSegmenter`, `lbdt evaluate`, `lbdt demo`,
    `lbdt benchmark`, `lbdt serve` and `lbdt export` consume it.
    """

    model: LBDT  # in eval mode
    variant: str  # lbdt4 | lbdt1 | lbdt4_r101 | tiny
    source: str  # where the weights came from (shipped name, path, URL, download name)
    kind: str = FORMAT  # "lbdt" (our format) | "official" (an official LBDT state dict)
    dataset: str = ""  # format of the data it was trained on (a2d | jhmdb | ytvos | ...), "" when unknown
    size: tuple[int, int] = DEFAULT_SIZE  # (H, W) model input it was trained at
    frame_gap: int = DEFAULT_FRAME_GAP  # k: reference frame t - k, in raw video frames
    max_words: int = MAX_WORDS  # N: tokens per sentence
    word_vectors: WordVectors | None = None  # its embedded table, when the checkpoint holds one
    word_table: str = ""  # the table to use otherwise (a `lbdt download` name or a file name)
    card: dict = field(default_factory=dict)  # model card
    inference: InferenceSetup | None = None  # set by `prepare` (device, precision, layout, kernels); None: as loaded

    def to(self, device: torch.device | str) -> Runnable:
        """Move the model (in place) and return self."""
        self.model.to(device)
        return self

    def describe(self) -> dict[str, Any]:
        """The facts as plain data (what output JSON files record about the model)."""
        return {"weights": self.source, "kind": self.kind, "variant": self.variant, "dataset": self.dataset,
                "size": list(self.size), "frame_gap": self.frame_gap, "max_words": self.max_words,
                "word_table": "embedded" if self.word_vectors is not None else self.word_table}


def run_facts(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """dataset, size, frame_gap and max_words from a checkpoint's `config.data` (defaults where absent)."""
    try:
        dataset = str(data.get("dataset", ""))
        size = tuple(int(s) for s in data.get("size", DEFAULT_SIZE))
        gap = data.get("frame_gap")
        gap = (SOURCES[dataset].raw_frame_gap if dataset in SOURCES else DEFAULT_FRAME_GAP) if gap is None else int(gap)
        max_words = int(data.get("max_words", MAX_WORDS))
    except (TypeError, ValueError) as e:
        raise LBDTError(f"{where}: config.data has a malformed size, frame_gap or max_words ({e})") from None
    if len(size) != 2 or min(size) <= 0 or gap < 0 or max_words < 1:
        raise LBDTError(f"{where}: config.data has an invalid size {size}, frame_gap {gap} or max_words {max_words}")
    return {"dataset": dataset, "size": size, "frame_gap": gap, "max_words": max_words}


def runnable_from_state(state: Mapping, *, where: str, source: str) -> Runnable:
    """Build the model of a validated lbdt checkpoint, load its weights strictly, and collect its run facts."""
    try:
        model = LBDT.from_config(state["model_config"])
    except (TypeError, ValueError) as e:
        raise LBDTError(f"{where}: field 'model_config' does not fit this lbdt ({e})") from None
    load_strict(model, state["model"], source=where)
    data = state.get("config", {}).get("data", {})
    facts = run_facts(data, where)
    vectors = None
    table = state.get("word_vectors")
    if table is not None:
        vectors = WordVectors(list(table["words"]), table["vectors"].float().numpy())
    word_table = str(state.get("word_table", ""))
    if not word_table and vectors is None:  # checkpoints written before `word_table` existed
        seed = data.get("synthetic_seed")
        if isinstance(seed, int):  # the synthetic benchmark's seeded table, regenerated exactly
            vectors = WordVectors.seeded(vocabulary(), dim=300, seed=seed)
        else:
            word_table = str(data.get("word_vectors", ""))
    return Runnable(model=model.eval(), variant=str(state["variant"]), source=source, kind=FORMAT,
                    word_vectors=vectors, word_table=word_table, card=dict(state.get("card", {})), **facts)
