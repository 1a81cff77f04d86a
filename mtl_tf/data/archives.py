"""Tar extraction that cannot write outside its destination."""

import tarfile
from pathlib import Path


def safe_extract(archive, destination):
    """Extracts the tar `archive` under `destination`, refusing the whole archive
    (before writing anything) if a member is absolute, climbs out with `..`, is a
    link, or is a device or FIFO."""
    destination = Path(destination).resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            target = (destination / member.name).resolve()
            unsafe = (
                Path(member.name).is_absolute()
                or not target.is_relative_to(destination)
                or not (member.isfile() or member.isdir())
            )
            if unsafe:
                raise ValueError(
                    f"Refusing to extract {archive}: member {member.name!r} would be "
                    f"written outside {destination} or is a link or device. Nothing "
                    f"was extracted."
                )
        destination.mkdir(parents=True, exist_ok=True)
        tar.extractall(destination, members=members, filter="data")
    return destination
