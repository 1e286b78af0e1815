"""What the server accepts into its datastore: ids that are plain names, files up to a size limit, NIfTI or DICOM.

MONAI Label's own datastore routes store any file under any id (an id ``../../evil`` was indexed); the app checks
every upload with these rules first.
"""
from __future__ import annotations

import re
import zlib
from typing import BinaryIO

from spectgan.errors import InvalidRequestError, TooLargeError

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ID_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ALLOWED_TYPES = "NIfTI (.nii, .nii.gz) or DICOM (.dcm, a single file with the DICM preamble)"
HEADER_BYTES = 1024  # enough for a NIfTI-1/2 header and the DICOM preamble


def is_plain_id(value: object) -> bool:
    """True for a plain datastore id: ``ID_RULE`` (no path separators, no ``..``)."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None and ".." not in value


def check_id(value: str, what: str = "image id") -> str:
    """``value`` when it is a plain datastore id (no path separators, no ``..``); InvalidRequestError otherwise."""
    if not is_plain_id(value):
        shown = repr(value) if isinstance(value, str) and len(value) <= 80 and "/" not in value else "given"
        raise InvalidRequestError(f"the {what} {shown} is not allowed: an id is {ID_RULE}")
    return value


def file_kind(filename: str, head: bytes) -> str:
    """``nifti`` or ``dicom`` from a file's name and its first ``HEADER_BYTES`` bytes (gzip-compressed NIfTI is
    decompressed far enough to see its header); InvalidRequestError naming the allowed types otherwise."""
    name = filename.lower()
    if name.endswith(NIFTI_SUFFIXES):
        header = head
        if name.endswith(".gz"):
            try:
                header = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, HEADER_BYTES)
            except zlib.error:
                header = b""
        if header[344:348] in (b"n+1\0", b"ni1\0") or header[4:8] == b"n+2\0":
            return "nifti"
        raise InvalidRequestError(f"{_base(filename)} is named like NIfTI but has no NIfTI header; allowed: "
                                  f"{ALLOWED_TYPES}")
    if "." not in name.rsplit("/", 1)[-1] or name.endswith(".dcm"):
        if head[128:132] == b"DICM":
            return "dicom"
        raise InvalidRequestError(f"{_base(filename)} has no DICOM preamble (DICM at byte 128); allowed: "
                                  f"{ALLOWED_TYPES}")
    raise InvalidRequestError(f"{_base(filename)!r} is not an accepted file type; allowed: {ALLOWED_TYPES}")


def _base(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1][:80] or "the file"


def check_size(size: int, max_bytes: int) -> None:
    """TooLargeError when an upload of ``size`` bytes is over ``max_bytes``."""
    if size > max_bytes:
        raise TooLargeError(f"the upload takes {size / 2**20:.1f} MB; this server accepts at most "
                            f"{max_bytes / 2**20:.0f} MB (its conf max_upload_mb)")


def check_upload(filename: str, stream: BinaryIO, max_bytes: int) -> str:
    """Check an uploaded file (a seekable stream, left at its start): its size at most ``max_bytes`` and its type
    (``file_kind``); returns the kind. InvalidRequestError says what is allowed."""
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    check_size(size, max_bytes)
    head = stream.read(HEADER_BYTES)
    stream.seek(0)
    return file_kind(filename or "", head)
