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

Nothing is installed unless every check passes; an install is a folder renamed into place at the end.
What is installed, and where, is read through `lbdt.registry`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from lbdt.checkpoint import make_state, read_checkpoint, runnable_from_state, save_checkpoint
from lbdt.errors import LBDTError
from lbdt.io import write_json
from lbdt.models.official import load_official
from lbdt.registry import CHECKPOINT_FILE, GDRIVE, KNOWN, MANIFEST_FILE, KnownWeights, home, installed
from lbdt.words import WordVectors, cache_files


# ---------------------------------------------------------------- transfer
def _requests():
    try:
        import requests
    except ImportError:
        raise LBDTError("downloading needs the optional extra: pip install 'lbdt[download]' "
                        "(or download the file yourself and pass --from PATH)") from None
    return requests


def fetch_url(url: str, target: Path, *, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download `url` to `target`, resuming `target.part` when a previous transfer was cut (HTTP Range).
    The file appears under its final name only when the transfer is complete (not yet verified)."""
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
            length = int(response.headers.get("Content-Length", 0)) or None
            total = (have if resumed else 0) + length if length else None
            with open(part, "ab" if resumed else "wb") as f, \
                    tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                         desc=target.name, disable=not progress, dynamic_ncols=True) as bar:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
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
def install(name: str, *, source: str | os.PathLike | None = None, max_words: int | None = None,
            fp16: bool = False, force: bool = False, progress: bool = True,
            known: dict[str, KnownWeights] | None = None) -> Path:
    """Fetch, verify and install `name`; returns its folder. `source` is a local file or URL to use instead of
    the entry's own URLs (a mirror, or a file downloaded by hand); it goes through the same checks.
    `max_words` / `fp16` shrink a GloVe cache (the N most frequent words; float16). An entry already installed
    is left as it is (nothing is fetched) unless `force`, `source` or a new `max_words` / `fp16` is given."""
    table = KNOWN if known is None else known
    if name not in table:
        raise LBDTError(f"unknown weights {name!r}; known: {', '.join(table)} (`lbdt download --list`)")
    entry = table[name]
    if (max_words is not None or fp16) and entry.kind != "glove":
        raise LBDTError(f"{name}: --max-words and --fp16 only apply to word tables")
    root = home()
    done = installed(name)
    if done is not None and not force and source is None and (done.get("max_words"), done.get("fp16")) == \
            (max_words, fp16):
        return root / name
    fetched, what = _fetch(entry, source, root / "downloads", progress=progress)
    owned = fetched.parent == root / "downloads"  # ours to delete; a --from file stays where it is
    try:
        digest = verify_checksum(fetched, sha256=entry.sha256, prefix=entry.sha256_prefix, what=what)
    except LBDTError:
        if owned:
            fetched.unlink(missing_ok=True)
        raise
    size = fetched.stat().st_size
    stage = root / f".{name}.installing"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        files = _convert(entry, fetched, stage, what=what, max_words=max_words, fp16=fp16, owned=owned)
        manifest = {"name": name, "kind": entry.kind, "source": what, "sha256": digest,
                    "bytes": size, "files": files,
                    "word_vectors": entry.word_vectors, "max_words": max_words, "fp16": fp16,
                    "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(stage / MANIFEST_FILE, manifest)
        final = root / name
        old = root / f".{name}.replaced"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(stage, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        if owned and isinstance(e, LBDTError):  # failed its checks (strict loading): a retry must fetch afresh
            fetched.unlink(missing_ok=True)
        raise
    if owned and fetched.is_file():
        fetched.unlink()  # installed in converted form; the raw download is no longer needed
    return root / name


def _fetch(entry: KnownWeights, source: str | os.PathLike | None, downloads: Path, *,
           progress: bool) -> tuple[Path, str]:
    """(local file, its origin for messages)."""
    if source is not None and not str(source).startswith(("http://", "https://", GDRIVE)):
        path = Path(source)
        if not path.is_file():
            raise LBDTError(f"{path}: no such file (--from takes a downloaded {entry.filename} or a URL)")
        return path, str(path)
    urls = (str(source),) if source is not None else entry.urls
    errors = []
    for url in urls:
        try:
            return fetch_url(url, downloads / entry.filename, progress=progress), url
        except LBDTError as e:
            errors.append(str(e))
    raise LBDTError(" | ".join(errors))


def _convert(entry: KnownWeights, fetched: Path, stage: Path, *, what: str, max_words: int | None, fp16: bool,
             owned: bool) -> list[str]:
    """Write the installed form of `fetched` into `stage`; returns the file names written."""
    if entry.kind == "glove":
        vec_file = stage / f"{entry.name}.vectors.npy"
        WordVectors.build_cache(fetched, vec_file, max_words=max_words, dtype="float16" if fp16 else "float32")
        return [p.name for p in cache_files(vec_file)]
    if entry.kind == "file":
        if owned:
            os.replace(fetched, stage / entry.filename)
        else:
            shutil.copyfile(fetched, stage / entry.filename)
        return [entry.filename]
    model = _load_checkpoint(entry, fetched, what)
    save_checkpoint(make_state(model, variant=entry.variant, config={"data": dict(entry.settings)},
                               source=f"{entry.name} ({what})", card=entry.card,
                               word_table=entry.word_vectors or None), stage / CHECKPOINT_FILE)
    return [CHECKPOINT_FILE]


def _load_checkpoint(entry: KnownWeights, fetched: Path, what: str):
    """The model of a checkpoint file, loaded strictly (this is the verification of checkpoints without a
    published checksum: every tensor must have its name and shape)."""
    if entry.kind == "official":
        model = load_official(fetched)
        variant = f"lbdt{model.config['num_layers']}" + ("_r101" if model.config["backbone_depth"] == 101 else "")
        if variant != entry.variant:
            raise LBDTError(f"{what}: an official {variant} checkpoint, but {entry.name} is {entry.variant}")
        return model
    if entry.kind == "lbdt":
        runnable = runnable_from_state(read_checkpoint(fetched), where=what, source=what)
        if runnable.variant != entry.variant:
            raise LBDTError(f"{what}: a {runnable.variant} checkpoint, but {entry.name} is {entry.variant}")
        return runnable.model
    raise LBDTError(f"{entry.name}: unknown kind {entry.kind!r}")


