"""`bench --dst` on an object store (s3://, gs://, az://; memory:// and file:// too), through fsspec.

bench works in a local staging folder exactly as it works in a local --dst, and the store holds the results. Before the
run, the run.json, metrics.csv and outputs already at the URI are copied into the staging folder, so a resume keeps
(and checks) them exactly as a local resume does. Each output is committed to the store as soon as it is made, run.json
when the run starts, and the report's files (metrics.csv, summary.json, report.md, grids/, charts/) at the end.

Every commit writes a temporary key beside the final one (`.NAME.RANDOM.tmp`) and then moves it onto the final key,
so the final key holds a whole object or nothing, whatever interrupts the upload; a resume ignores the temporary keys
an interruption may leave behind. On S3 and GCS the move is a server-side copy (itself atomic) and a delete.

A --dst folder on the local disk goes through none of this: `Destination(folder)` only names it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

from ..errors import InputError, first_line

# scheme -> the fsspec backend package it needs (None: fsspec's own). memory:// lives in one process only.
SCHEMES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "file": None,
    "memory": None,
}
RUN_STATE = ("run.json", "metrics.csv")  # what a resume reads besides the outputs
REPORT_FILES = ("metrics.csv", "summary.json", "report.md")
REPORT_FOLDERS = ("grids", "charts")


def object_store_uri(dst: Union[str, Path]) -> Optional[str]:
    """The object-store URI that --dst names, or None for a local folder.

    The command line hands --dst over as a Path, which folds `s3://b/x` into `s3:/b/x`: the URI is rebuilt from that.
    """
    text = str(dst)
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]+):(/*)(.*)", text, flags=re.DOTALL)
    # "s3://" alone (an unset $BUCKET) folds to "s3:": a known scheme without slashes is still a URI, not a folder.
    if match is None or (not match.group(2) and match.group(1).lower() not in SCHEMES):
        return None
    scheme, rest = match.group(1).lower(), match.group(3).strip("/")
    if scheme not in SCHEMES:
        raise InputError(
            f"--dst {text} has the unknown scheme {scheme}://; give a folder, or an s3://, gs:// or az:// URI."
        )
    if not rest:
        raise InputError(f"--dst {text} names no bucket or folder after {scheme}://.")
    return f"file:///{rest}" if scheme == "file" else f"{scheme}://{rest}"


class ObjectStore:
    """A folder on an object store: whole objects in, whole objects out."""

    def __init__(self, uri: str):
        import fsspec

        self.uri = uri.rstrip("/")
        scheme = self.uri.partition("://")[0]
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        except ImportError:
            package = SCHEMES.get(scheme) or "its fsspec backend"
            raise InputError(
                f"--dst {self.uri} needs {package} for {scheme}://, which is not installed: pip install {package}."
            ) from None
        except Exception as error:  # bad credentials or options, as the backend words them
            raise InputError(f"Cannot open --dst {self.uri} ({first_line(error)}).") from None
        self.root = self.root.rstrip("/")

    def __reduce__(self):  # a Ray actor gets the URI and opens its own connection
        return (ObjectStore, (self.uri,))

    def key(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def uri_of(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    def commit(self, local: Path, relative: str) -> None:
        """Upload `local` to a temporary key, then move it onto `relative`: the final key is whole or absent."""
        final = self.key(relative)
        parent, _, name = final.rpartition("/")
        temporary = f"{parent}/.{name[:64]}.{uuid.uuid4().hex}.tmp"
        try:
            self._make_parent(final)
            self.fs.put_file(str(local), temporary)
            self.fs.mv(temporary, final)
        except BaseException as error:
            with contextlib.suppress(Exception):
                self.fs.rm_file(temporary)
            if isinstance(error, Exception):
                raise InputError(
                    f"Could not write {self.uri_of(relative)} ({first_line(error)}); nothing was left half-written."
                ) from None
            raise

    def fetch(self, relative: str, local: Path) -> bool:
        """Copy `relative` to `local` if the store has it."""
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get_file(self.key(relative), str(local))
        except FileNotFoundError:
            return False
        except Exception as error:
            raise InputError(f"Cannot read {self.uri_of(relative)} ({first_line(error)}).") from None
        return True

    def images(self, folder: str) -> list[str]:
        """The PNG names directly in `folder` (temporary keys left by an interruption are not outputs)."""
        try:
            keys = self.fs.find(self.key(folder), maxdepth=1)
        except FileNotFoundError:
            return []
        except Exception as error:
            raise InputError(f"Cannot list {self.uri_of(folder)} ({first_line(error)}).") from None
        names = (key.rpartition("/")[2] for key in keys)
        return sorted(name for name in names if name.endswith(".png") and not name.startswith("."))

    def check_writable(self, probe: Path) -> None:
        """Fail now, not after the work, if objects cannot be written there."""
        probe.write_bytes(b"")
        relative = f".inpaintkit-write-check.{uuid.uuid4().hex}"
        self.commit(probe, relative)
        probe.unlink()
        with contextlib.suppress(Exception):
            self.fs.rm_file(self.key(relative))

    def _make_parent(self, key: str) -> None:
        # Only a local file system has folders to make: on S3 and GCS, makedirs may create a bucket.
        from fsspec.implementations.local import LocalFileSystem

        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(key.rpartition("/")[0], exist_ok=True)


@dataclass
class Destination:
    """Where bench writes: `folder` itself (a local --dst), or `folder` as the staging copy of an object store."""

    folder: Path
    store: Optional[ObjectStore] = None

    def relative(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()

    def shown(self, path: Path) -> Union[Path, str]:
        """How a file is named to the user: its path, or its URI on the store."""
        return path if self.store is None else self.store.uri_of(self.relative(path))

    def commit(self, path: Path) -> None:
        """Put a file written in the folder onto the store (nothing to do for a local --dst)."""
        if self.store is not None:
            self.store.commit(path, self.relative(path))

    def fetch(self, path: Path) -> bool:
        """Bring a file from the store into the folder (a local --dst has it already)."""
        return path.is_file() if self.store is None else self.store.fetch(self.relative(path), path)

    def on_output(self, path: Path, status: str) -> None:
        """An output just made is committed before it is reported: the status line means it is saved."""
        if status.startswith("generated"):
            self.commit(path)

    def publish(self) -> None:
        """The report's files onto the store, once the run is over."""
        if self.store is None:
            return
        files = [self.folder / name for name in REPORT_FILES]
        files += [path for folder in REPORT_FOLDERS for path in sorted((self.folder / folder).glob("*.png"))]
        for path in files:
            if path.is_file():
                self.commit(path)


@contextlib.contextmanager
def staged(uri: str, methods: list[str], resume: bool = True) -> Iterator[Destination]:
    """A staging folder holding what the store at `uri` already has of this run (removed at the end); nothing is
    fetched when the run will not `resume` (--overwrite makes every output again)."""
    store = ObjectStore(uri)
    folder = Path(tempfile.mkdtemp(prefix="inpaintkit-dst-"))
    try:
        store.check_writable(folder / ".write-check")
        for name in RUN_STATE if resume else ():
            store.fetch(name, folder / name)
        for method in methods if resume else ():
            for name in store.images(method):
                store.fetch(f"{method}/{name}", folder / method / name)
        yield Destination(folder, store)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
