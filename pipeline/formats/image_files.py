"""What an input folder holds, listed on the driver: each real file once, nothing from outside the folder.

Spark's file listing follows symbolic links wherever they lead and around loops (one file was scored 41 times
through a link to its own folder). Here a link is resolved once: a file link inside the folder is a second name
for a file scored under its own name, a folder link inside it is an alias of a folder walked anyway, and a link
that leads outside, loops or dangles is refused with the reason. Names starting with '.' or '_' are hidden, as
in Spark. Only paths reach the driver; the files are read on the executors.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from pyarrow import fs as pafs

from pipeline import storage
from pipeline.paths import local_path

OUTSIDE = "resolves outside the input folder"
_LINK_ERRORS = {errno.ELOOP: "symbolic link loop", errno.ENOENT: "broken symbolic link (its target does not exist)"}


@dataclass
class FolderListing:
    files: list[tuple[str, str]] = field(default_factory=list)    # (path as listed, real path to read)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path as listed, reason)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (link, the listed path it duplicates)
    prefix: str = ""  # what every listed path holds before its part relative to the folder

    def relative(self, path: str) -> str:
        """A listed path relative to the listed folder."""
        return path.removeprefix(self.prefix)


def list_folder(folder: str, suffixes: tuple[str, ...] = ("",)) -> FolderListing:
    """Visible files under `folder` (a local path or a URI) whose names end with one of `suffixes` (any case),
    sorted by path; a link to a folder outside is refused whatever its name (it may hold such files)."""
    local = local_path(folder)
    listing = _walk_local(local, suffixes) if local is not None else _walk_remote(folder, suffixes)
    listing.prefix = f"{(folder if local is None else local).rstrip('/')}/"
    listing.files.sort()
    listing.refused.sort()
    return listing


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _wanted(name: str, suffixes: tuple[str, ...]) -> bool:
    return name.lower().endswith(suffixes)


def _walk_remote(folder: str, suffixes: tuple[str, ...]) -> FolderListing:
    """Object stores and HDFS have no symbolic links to follow: every visible file, each path component visible."""
    fs, root = storage.filesystem(folder)
    prefix, base = root.rstrip("/") + "/", folder.rstrip("/")
    listing = FolderListing()
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = info.path[len(prefix):] if info.path.startswith(prefix) else info.base_name
        if (info.type == pafs.FileType.File and _wanted(relative, suffixes)
                and not any(_hidden(part) for part in relative.split("/"))):
            listing.files.append((f"{base}/{relative}", f"{base}/{relative}"))
    return listing


def _walk_local(folder: str, suffixes: tuple[str, ...]) -> FolderListing:
    """Walk real folders only; resolve each link once (never descending into one, so nothing loops)."""
    root = folder
    real_root = os.path.realpath(root)
    listing, links, pending = FolderListing(), [], [root]
    while pending:
        for entry in _visible_entries(pending.pop(), listing):
            if entry.is_symlink():
                links.append(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif entry.is_file(follow_symlinks=False) and _wanted(entry.name, suffixes):
                listing.files.append((entry.path, os.path.join(real_root, os.path.relpath(entry.path, root))))
    real_files = {real: path for path, real in listing.files}
    for link in sorted(links):
        _add_link(listing, link, real_root, real_files, suffixes)
    return listing


def _visible_entries(folder: str, listing: FolderListing) -> list[os.DirEntry]:
    """The entries of `folder` not hidden; a folder that cannot be listed is refused with the reason."""
    try:
        with os.scandir(folder) as entries:
            return [entry for entry in entries if not _hidden(entry.name)]
    except OSError as exc:
        listing.refused.append((folder + "/", f"folder cannot be listed ({exc.strerror})"))
        return []


def _add_link(listing: FolderListing, link: str, real_root: str, real_files: dict[str, str],
              suffixes: tuple[str, ...]) -> None:
    """Sort one symbolic link: a new file, a duplicate, an alias of a folder inside (skipped), or refused."""
    try:
        is_folder = stat.S_ISDIR(os.stat(link).st_mode)  # follows the link to its end
    except OSError as exc:
        if _wanted(link, suffixes):
            listing.refused.append((link, _LINK_ERRORS.get(exc.errno, f"unreadable link ({exc.strerror})")))
        return
    if not is_folder and not _wanted(link, suffixes):
        return
    real = os.path.realpath(link)
    if os.path.commonpath([real, real_root]) != real_root:
        listing.refused.append((link, f"{'folder ' if is_folder else ''}{OUTSIDE} (to {real})"))
    elif is_folder:
        return  # an alias of a folder inside: its files are listed under their own names
    elif real in real_files:
        listing.duplicates.append((link, real_files[real]))
    else:
        real_files[real] = link  # the only visible name of a file kept in a hidden folder
        listing.files.append((link, real))
