"""`lbdt download`: the weights lbdt knows about (`lbdt.registry.KNOWN`), fetched, verified and installed once.

`install` fetches a file (Google Drive through `gdown`, any other URL through `requests`, resumed from a partial download, with a
progress bar; or an already-downloaded file / a mirror URL given as `source`), verifies it, and installs it
under `home()/<name>/`:

* official LBDT checkpoints are loaded strictly (`load_official`), converted once into lbdt's checkpoint
  format and stored with their model card and the name of their word table (`glove-840b`);
* lbdt checkpoints are loaded strictly and stored with their card;
* GloVe is streamed from its zip (never unpacked) into the binary word-vector cache, optionally only its N
  most frequent words and in float16;
* plain files (ImageNet ResNet-50) are kept as they are, after their checksum.

Nothing is installed unless every check passes; an install is a folder swapped into place whole at the end
(`lbdt.io.atomic_folder`): a kill at any point leaves the previous install or the new one.
What is installed, and where, is read through `lbdt.registry`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lbdt.checkpoint import make_state, read_checkpoint, runnable_from_state, save_checkpoint
from lbdt.errors import LBDTError
from lbdt.io import atomic_folder, clean_stale, crash_point, write_json
from lbdt.models.official import load_official
from lbdt.paths import check_output_dir
from lbdt.registry import (
    CHECKPOINT_FILE,
    GDRIVE,
    HOME_ENV,
    KNOWN,
    MANIFEST_FILE,
    KnownWeights,
    home,
    installed,
    unknown_weights,
)
from lbdt.words import WordVectors, cache_files


# ---------------------------------------------------------------- transfer
def _requests():
    try:
        import requests
    except ImportError:
        raise LBDTError("downloading needs the optional extra: pip install 'lbdt[download]' "
                        "(or download the file yourself and pass --from PATH)") from None
    return requests


def fetch_url(url: str, target: Path, *, progress: bool = True, timeout: float = 30.0, max_bytes: int = 0) -> Path:
    """Download `url` to `target`, resuming `target.part` when a previous transfer was cut (HTTP Range).
    The file appears under its final name only when the transfer is complete (not yet verified): as many bytes
    as the server announced, and (with `max_bytes`) never more than that; a larger file is refused."""
    if url.startswith(GDRIVE):
        return _fetch_gdrive(url[len(GDRIVE):], target, progress=progress)
    requests = _requests()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if have and response.status_code == 416:  # nothing left to send: the part is the whole file
                os.replace(part, target)
                return target
            response.raise_for_status()
            resumed = have > 0 and response.status_code == 206
            announced = response.headers.get("Content-Length", "")
            length = int(announced) if announced.isdigit() else None
            start = have if resumed else 0
            total = start + length if length else None
            if max_bytes and total is not None and total > max_bytes:
                raise LBDTError(f"{url}: the server offers {total:,} bytes, more than this file can be "
                                f"({max_bytes:,}); not the expected file, nothing downloaded")
            written = start
            with open(part, "ab" if resumed else "wb") as f, \
                    tqdm(total=total, initial=start, unit="B", unit_scale=True,
                         desc=target.name, disable=not progress, dynamic_ncols=True) as bar:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    written += len(chunk)
                    if max_bytes and written > max_bytes:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
            if max_bytes and written > max_bytes:
                part.unlink(missing_ok=True)
                raise LBDTError(f"{url}: more than {max_bytes:,} bytes, more than this file can be; not the "
                                "expected file, the transfer was stopped and nothing kept")
            if total is not None and written != total:
                raise LBDTError(f"{url}: the transfer ended after {written:,} of {total:,} bytes; {written:,} "
                                f"bytes kept in {part}, run again to resume")
    except requests.RequestException as e:
        kept = f"; {part.stat().st_size} bytes kept in {part}, run again to resume" if part.is_file() else ""
        raise LBDTError(f"{url}: cannot download ({type(e).__name__}: {e}){kept}; offline? download it "
                        "yourself and pass the local path (--from PATH)") from None
    os.replace(part, target)
    return target


def _fetch_gdrive(file_id: str, target: Path, *, progress: bool) -> Path:
    try:
        import gdown
    except ImportError:
        raise LBDTError("downloading from Google Drive needs the optional extra: pip install 'lbdt[download]' "
                        "(or download the file yourself and pass --from PATH)") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    try:  # gdown handles Drive's confirmation page and resumes its own partial file
        gdown.download(id=file_id, output=str(target), quiet=not progress, resume=True)
    except Exception as e:  # noqa: BLE001 -- gdown raises several types for one failure: report it as one line
        raise LBDTError(f"Google Drive file {file_id}: cannot download ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); download it in a browser "
                        f"(https://drive.google.com/file/d/{file_id}) and pass --from PATH") from None
    if not target.is_file():
        raise LBDTError(f"Google Drive file {file_id}: download produced no file")
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, *, sha256: str | None, prefix: str = "", what: str) -> str:
    """The file's sha256, checked against the full digest and/or the prefix given; LBDTError when it differs."""
    digest = file_sha256(path)
    if (sha256 and digest != sha256.lower()) or (prefix and not digest.startswith(prefix.lower())):
        expected = sha256.lower() if sha256 else f"{prefix}..."
        raise LBDTError(f"{what}: checksum mismatch (got sha256 {digest}, expected {expected}); "
                        "the file was not kept")
    return digest


# ---------------------------------------------------------------- install
@dataclass(frozen=True)
class Installed:
    """What `install` did: `status` is "installed" (new), "replaced" (an older install was swapped out),
    "unchanged" (the same file with the same options was installed already: nothing replaced) or "present"
    (already installed; nothing fetched)."""

    name: str
    folder: Path
    status: str
    verified: str  # how the file was checked ("sha256", "sha256 prefix ...", "unverified: ...")
    words: int | None = None  # word tables: words stored
    notes: tuple[str, ...] = ()

    def message(self) -> str:
        """One line for people (what `lbdt download` prints)."""
        head = {"installed": "installed in", "replaced": "reinstalled in", "unchanged": "unchanged in",
                "present": "already installed in"}[self.status]
        tail = {"unchanged": " (the same file and options as the installed one: nothing replaced)",
                "present": " (nothing fetched; --force fetches and installs again)"}.get(self.status, "")
        return f"{self.name}: {head} {self.folder}{tail}" + "".join(f"; {n}" for n in self.notes)


def _check_install_args(name: object, source: object, max_words: object, fp16: object, force: object) -> None:
    if not isinstance(name, str) or name.strip() == "":
        raise LBDTError(f"weights name: expected a non-empty name such as official-lbdt4, got {name!r}")
    if source is not None and (not isinstance(source, (str, os.PathLike)) or str(source).strip() == ""):
        raise LBDTError(f"--from: expected a file path or an http(s) URL, got {source!r}")
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1):
        raise LBDTError(f"--max-words: must be an integer >= 1, got {max_words!r}")
    for option, value in (("--fp16", fp16), ("--force", force)):
        if not isinstance(value, bool):
            raise LBDTError(f"{option}: must be True or False, got {value!r}")


def _verification(entry: KnownWeights) -> str:
    if entry.sha256:
        return "sha256 (published)"
    if entry.sha256_prefix:
        return f"sha256 prefix {entry.sha256_prefix} (published in the file name)"
    if entry.kind == "glove":
        return "word count (no checksum is published for this file)"
    if entry.kind in ("official", "lbdt"):
        return ("unverified: no checksum is published for this file; strict loading checked every tensor's name "
                "and shape, but not that these are the weights the metrics below were measured with")
    return "unverified: no checksum is published for this file"  # a plain file without one (none in KNOWN today)


def install(name: str, *, source: str | os.PathLike | None = None, max_words: int | None = None,
            fp16: bool = False, force: bool = False, progress: bool = True,
            known: dict[str, KnownWeights] | None = None) -> Installed:
    """Fetch, verify and install `name`; returns what was done (`Installed`). `source` is a local file or URL to
    use instead of the entry's own URLs (a mirror, or a file downloaded by hand); it goes through the same
    checks (size, checksum where one is published, strict loading, word count). `max_words` / `fp16` shrink a
    GloVe cache (the N most frequent words; float16). An entry already installed is left as it is (nothing is
    fetched) unless `force`, `source` or a new `max_words` / `fp16` is given; the same file with the same
    options is not installed again unless `force`. The install folder is replaced whole, atomically."""
    _check_install_args(name, source, max_words, fp16, force)
    table = KNOWN if known is None else known
    if name not in table:
        raise LBDTError(unknown_weights(name))
    entry = table[name]
    if (max_words is not None or fp16) and entry.kind != "glove":
        raise LBDTError(f"{name}: --max-words and --fp16 only apply to word tables")
    root = check_output_dir(home(), HOME_ENV)
    final = root / name
    clean_stale(final)  # what a killed install left beside it
    if final.exists() and not final.is_dir():
        raise LBDTError(f"{HOME_ENV} {root}: {final} exists and is not an install folder")
    done = installed(name)
    same_options = done is not None and (done.get("max_words"), done.get("fp16")) == (max_words, fp16)
    if same_options and not force and source is None:
        return Installed(name, final, "present", done.get("verified", ""), done.get("words"))
    fetched, what = _fetch(entry, source, root / "downloads", progress=progress)
    owned = fetched.parent == root / "downloads"  # ours to delete; a --from file stays where it is
    try:
        size = fetched.stat().st_size
        if size < entry.min_bytes:
            raise LBDTError(f"{what}: {size:,} bytes, but {entry.filename} ({name}) is {entry.size}; not that file")
        digest = verify_checksum(fetched, sha256=entry.sha256, prefix=entry.sha256_prefix, what=what)
    except LBDTError:
        if owned:
            fetched.unlink(missing_ok=True)
        raise
    if same_options and not force and done["sha256"] == digest:
        if owned:
            fetched.unlink(missing_ok=True)
        return Installed(name, final, "unchanged", done.get("verified", ""), done.get("words"))
    verified = _verification(entry)
    status = "replaced" if final.exists() else "installed"
    try:
        with atomic_folder(final) as stage:
            files, words, notes = _convert(entry, fetched, stage, what=what, max_words=max_words, fp16=fp16,
                                           owned=owned, verified=verified)
            crash_point("install-converted")
            write_json(stage / MANIFEST_FILE, {
                "name": name, "kind": entry.kind, "source": what, "sha256": digest, "bytes": size, "files": files,
                "word_vectors": entry.word_vectors, "max_words": max_words, "fp16": fp16, "words": words,
                "verified": verified, "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except LBDTError:
        if owned:  # failed its checks (strict loading, word count): a retry must fetch afresh
            fetched.unlink(missing_ok=True)
        raise
    if owned and fetched.is_file():
        fetched.unlink()  # installed in converted form; the raw download is no longer needed
    if verified.startswith("unverified"):
        notes = (*notes, "unverified: no checksum is published for this file (its model card says so)")
    return Installed(name, final, status, verified, words, notes)


def _fetch(entry: KnownWeights, source: str | os.PathLike | None, downloads: Path, *,
           progress: bool) -> tuple[Path, str]:
    """(local file, its origin for messages)."""
    if source is not None and not str(source).startswith(("http://", "https://", GDRIVE)):
        path = Path(source)
        if not path.is_file():
            raise LBDTError(f"--from {path}: no such file (it takes the downloaded {entry.filename} or a URL)")
        return path, str(path)
    urls = (str(source),) if source is not None else entry.urls
    errors = []
    for url in urls:
        try:
            return fetch_url(url, downloads / entry.filename, progress=progress, max_bytes=entry.max_bytes), url
        except LBDTError as e:
            errors.append(str(e))
    raise LBDTError(" | ".join(errors))


def _convert(entry: KnownWeights, fetched: Path, stage: Path, *, what: str, max_words: int | None, fp16: bool,
             owned: bool, verified: str) -> tuple[list[str], int | None, tuple[str, ...]]:
    """Write the installed form of `fetched` into `stage`; returns (file names written, words stored for a word
    table, notes for the user)."""
    if entry.kind == "glove":
        vec_file = stage / f"{entry.name}.vectors.npy"
        table = WordVectors.build_cache(fetched, vec_file, max_words=max_words, dtype="float16" if fp16 else "float32")
        return [p.name for p in cache_files(vec_file)], len(table), _check_word_count(entry, len(table), max_words,
                                                                                       what)
    if entry.kind == "file":
        if owned:
            os.replace(fetched, stage / entry.filename)
        else:
            shutil.copyfile(fetched, stage / entry.filename)
        return [entry.filename], None, ()
    model = _load_checkpoint(entry, fetched, what)
    card = entry.card
    if verified.startswith("unverified"):
        card = {**card, "verification": verified}
    save_checkpoint(make_state(model, variant=entry.variant, config={"data": dict(entry.settings)},
                               source=f"{entry.name} ({what})", card=card,
                               word_table=entry.word_vectors or None), stage / CHECKPOINT_FILE)
    return [CHECKPOINT_FILE], None, ()


def _check_word_count(entry: KnownWeights, words: int, max_words: int | None, what: str) -> tuple[str, ...]:
    """A word table must hold the published word count, or (with --max-words N) at least N words; the notes
    say what a cut install keeps."""
    if entry.words is None:
        return ()
    if max_words is None:
        if words < entry.words * 0.99:  # GloVe readers differ by a few odd lines, never by 1 %
            raise LBDTError(f"{what}: {words:,} words, but {entry.filename} ({entry.name}) has {entry.words:,}; "
                            f"not the full table (to install only its most frequent words on purpose, pass "
                            f"--max-words N with N <= {words:,})")
        return ()
    if words < max_words:
        raise LBDTError(f"{what}: only {words:,} words, fewer than --max-words {max_words:,} ({entry.name} has "
                        f"{entry.words:,}); not the table asked for")
    note = (f"{words:,} of {entry.name}'s {entry.words:,} words kept (--max-words {max_words:,}); rarer words are "
            "unknown (zero vectors)")
    return (note,)


def _load_checkpoint(entry: KnownWeights, fetched: Path, what: str):
    """The model of a checkpoint file, loaded strictly (this is the verification of checkpoints without a
    published checksum: every tensor must have its name and shape)."""
    expected = f"; {entry.name} is {entry.filename} ({entry.size})"
    if entry.kind == "official":
        try:
            model = load_official(fetched)
        except LBDTError as e:
            raise LBDTError(f"{e}{expected}") from None
        variant = f"lbdt{model.config['num_layers']}" + ("_r101" if model.config["backbone_depth"] == 101 else "")
        if variant != entry.variant:
            raise LBDTError(f"{what}: an official {variant} checkpoint, but {entry.name} is {entry.variant}")
        return model
    if entry.kind == "lbdt":
        try:
            runnable = runnable_from_state(read_checkpoint(fetched), where=what, source=what)
        except LBDTError as e:
            raise LBDTError(f"{e}{expected}") from None
        if runnable.variant != entry.variant:
            raise LBDTError(f"{what}: a {runnable.variant} checkpoint, but {entry.name} is {entry.variant}")
        return runnable.model
    raise LBDTError(f"{entry.name}: unknown kind {entry.kind!r}")
