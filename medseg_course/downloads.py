"""Downloads for users' own machines: a Decathlon task, checked and unpacked safely.

Nothing in the book or the tests downloads. ``download_msd`` fetches a task archive from
MONAI's mirror, verifies its published MD5 checksum and unpacks it with ``safe_extract``,
which refuses members that would land outside the destination (absolute paths, ``..``,
links out of the folder, devices).
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg_course.datasets import DataSetError

__all__ = ["MSD_TASKS", "MSD_BASE_URL", "data_home", "download_msd", "safe_extract"]


#: Decathlon tasks: archive address (MONAI's mirror) and published MD5 checksum.
MSD_TASKS = {
    "Task01_BrainTumour": "240a19d752f0d9e9101544901065d872",
    "Task02_Heart": "06ee59366e1e5124267b774dbd654057",
    "Task03_Liver": "a90ec6c4aa7f6a3d087205e23d4e6397",
    "Task04_Hippocampus": "9d24dba78a72977dbd1d2e110310f31b",
    "Task05_Prostate": "35138f08b1efaef89d7424d2bcc928db",
    "Task06_Lung": "8afd997733c7fc0432f71255ba4e52dc",
    "Task07_Pancreas": "4f7080cfca169fa8066d17ce6eb061e4",
    "Task08_HepaticVessel": "641d79e80ec66453921d997fbf12a29c",
    "Task09_Spleen": "410d4a301da4e5b2f6f86ec3ddba524e",
    "Task10_Colon": "bad7a188931dc2f6acf72b08eb6202d0",
}
MSD_BASE_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/"


def data_home(cache_dir=None):
    """Where downloads go: ``cache_dir``, else ``$MEDSEG_DATA``, else the user cache folder."""
    import os  # noqa: PLC0415

    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("MEDSEG_DATA"):
        return Path(os.environ["MEDSEG_DATA"]).expanduser()
    import pooch  # noqa: PLC0415

    return Path(pooch.os_cache("medseg-course"))


def download_msd(task, cache_dir=None, base_url=MSD_BASE_URL, md5=None, progress=True):
    """Download and unpack a Decathlon task, verified against its published checksum.

    The archive is fetched with pooch into ``data_home(cache_dir)``, checked against the
    MD5 in ``MSD_TASKS`` (a mismatch deletes the file and raises), and unpacked next to it
    by ``safe_extract``, which refuses absolute paths, ``..`` and links out of the folder.
    A task already unpacked is reused without any network access.

    Parameters
    ----------
    task : str
        A key of ``MSD_TASKS``, e.g. ``"Task04_Hippocampus"`` (27 MB) or ``"Task09_Spleen"``
        (1.5 GB).
    cache_dir : str or Path, optional
    base_url : str
        Where ``<task>.tar`` is served (tests point this at a local server).
    md5 : str, optional
        Override the expected checksum (for mirrors of other archives).
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        The unpacked task folder, ready for ``load_msd``.
    """
    import pooch  # noqa: PLC0415

    if task not in MSD_TASKS and md5 is None:
        raise ValueError(f"Unknown Decathlon task {task!r}. Choose one of {sorted(MSD_TASKS)}.")
    home = data_home(cache_dir)
    target = home / task
    if (target / "dataset.json").is_file():
        return target
    home.mkdir(parents=True, exist_ok=True)
    expected = md5 or MSD_TASKS[task]
    try:
        archive = pooch.retrieve(
            url=base_url.rstrip("/") + f"/{task}.tar",
            known_hash=f"md5:{expected}",
            fname=f"{task}.tar",
            path=home,
            progressbar=progress,
        )
    except ValueError as err:  # pooch: hash mismatch (it deletes the download)
        raise DataSetError(f"{task}.tar: checksum mismatch, download deleted ({err}). Try again later.") from None
    import shutil  # noqa: PLC0415

    # unpack beside the cache, then move into place: an interrupted unpack leaves no half task
    staging = home / f".{task}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(archive, staging)
        if (staging / task).is_dir():
            if target.exists():
                raise DataSetError(f"{target}: exists without dataset.json; move it away and run again.")
            os.replace(staging / task, target)
    except DataSetError:  # a ValueError too, but already names the problem
        raise
    except (OSError, ValueError, EOFError) as err:
        raise DataSetError(f"{archive}: cannot unpack ({type(err).__name__}: {err}); delete it and download again.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (target / "dataset.json").is_file():
        raise DataSetError(f"{archive}: the archive did not contain {task}/dataset.json.")
    return target


def _unsafe_reason(name, link_target=None, hard=False):
    """Why an archive member may not be extracted, or None.

    A symbolic link's target is resolved from the member's folder, a hard link's from the
    archive's root; either must stay inside the folder being unpacked into.
    """
    import posixpath  # noqa: PLC0415

    def escapes(path):
        path = path.replace("\\", "/")
        if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
            return "an absolute path"
        return "a '..' component" if ".." in path.split("/") else None

    reason = escapes(name)
    if reason or link_target is None:
        return reason
    base = "" if hard else posixpath.dirname(name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, link_target.replace("\\", "/")))
    if escapes(link_target) == "an absolute path" or resolved == ".." or resolved.startswith("../"):
        return f"a link to {link_target!r}, outside the folder"
    return None


def safe_extract(archive, destination):
    """Unpack a .tar (.tar.gz, .tgz, .tar.bz2) or .zip archive, refusing anything unsafe.

    Every member is checked before anything is written: absolute paths, ``..`` components
    and links (symbolic or hard) that point outside ``destination`` stop the extraction, so
    a crafted archive cannot write outside the folder or plant a link to elsewhere. Links in
    zip archives are refused outright (``zipfile`` would write them as plain files holding
    the target's path). Tar members are also extracted with Python's ``"data"`` filter (no
    device files, no set-uid bits). Existing files are never replaced: a member that would
    overwrite one stops the extraction.

    Parameters
    ----------
    archive : str or Path
    destination : str or Path
        Created if missing.

    Returns
    -------
    list of Path
        The extracted files and folders.

    Raises
    ------
    DataSetError
        Naming the archive and the first unsafe member.
    """
    import stat  # noqa: PLC0415
    import tarfile  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    archive, destination = Path(archive), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)

    def check(name, link_target=None, hard=False):
        reason = _unsafe_reason(name, link_target, hard)
        if reason:
            raise DataSetError(f"{archive}: refusing unsafe archive member {name!r} ({reason}); nothing was extracted.")
        if (destination / name).exists() and not (destination / name).is_dir():
            raise DataSetError(f"{destination / name}: already exists; the archive would replace it. Move it away first.")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            for member in members:
                is_link = stat.S_ISLNK(member.external_attr >> 16)
                check(member.filename, handle.read(member).decode("utf-8", "replace") if is_link else None)
                if is_link:
                    raise DataSetError(f"{archive}: refusing link member {member.filename!r} in a zip archive; nothing was extracted.")
            handle.extractall(destination, members=members)
            return [destination / m.filename for m in members]
    try:
        handle = tarfile.open(archive)
    except tarfile.TarError as err:
        raise DataSetError(f"{archive}: not a tar or zip archive ({err}); delete it and download again.") from None
    with handle:
        members = handle.getmembers()
        for member in members:
            check(member.name, member.linkname if (member.issym() or member.islnk()) else None, hard=member.islnk())
        handle.extractall(destination, members=members, filter="data")
        return [destination / m.name for m in members]
