"""Fetching an archive over HTTP with an MD5 check, and extracting it without path escapes."""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = ["download_file", "extract_tar"]

_CHUNK = 1 << 20  # bytes read per network call


def download_file(url: str, dest: Path, md5: str, *, progress: TextIO | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and check its MD5 hex digest.

    The body goes to a temporary file beside ``dest`` that is renamed into place only when
    the checksum matches, so an interrupted or corrupt download never leaves ``dest`` behind.
    Progress goes to ``progress`` (default ``sys.stderr``) every ~10 %.

    Raises:
        ValueError: checksum mismatch. OSError: the download failed.
    """
    stream = sys.stderr if progress is None else progress
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, stream, timeout)
        if digest != md5.lower():
            raise ValueError(
                f"MD5 mismatch for {url}: expected {md5.lower()}, got {digest}; the download is corrupt or the "
                "URL serves another file: retry, or pass the right md5=... for that URL."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch(url: str, out: BinaryIO, stream: TextIO, timeout: float) -> str:
    """Copy ``url``'s body into binary file ``out``, printing progress; return its MD5 hex digest."""
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not a security check
    print(f"downloading {url}", file=stream, flush=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 10
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                while total and done * 100 >= next_report * total:
                    print(f"  {next_report:3d}% of {total / 1e6:.1f} MB", file=stream, flush=True)
                    next_report += 10
    except OSError as err:  # URLError, timeouts, resets
        raise OSError(f"cannot download {url} ({err}); check the network, or fetch the file by hand.") from None
    if not total:
        print(f"  done, {done / 1e6:.1f} MB", file=stream, flush=True)
    return digest.hexdigest()


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract tar (optionally gzipped) ``archive`` into ``dest``, refusing members that are
    absolute, climb out of ``dest``, or are links or device files."""
    dest = dest.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            target = (dest / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(dest):
                raise ValueError(
                    f"refusing to extract {archive}: member {member.name!r} is a link, a device or escapes {dest}; "
                    "the archive is not a genuine dataset archive, delete it."
                )
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members, filter="data")
        else:  # Python without extraction filters: members were vetted above
            tar.extractall(dest, members)
