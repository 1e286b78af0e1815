"""Export DICOM files to a PACS by C-STORE (``dicom://AET@host:port``) or STOW-RS (``http(s)://host:port/path``),
through a local outbox so that nothing is lost.

``export_folder(DIR, URL)`` records every DICOM instance under DIR in ``DIR/outbox/<SOPInstanceUID>.json`` (its
file and, per destination, ``pending`` or ``confirmed``), then sends what is pending. An instance is confirmed only
when the PACS confirms it: C-STORE status 0x0000, or a STOW-RS response that lists it and has no Failed SOP
Sequence. When the PACS is down, refuses the credentials or rejects an instance, a ``PacsError`` says so and the
rest stays pending; ``retry_pending(DIR)`` resends it. Nothing is retried behind the caller's back: a failure is
reported at once and the outbox is the retry. Resending uses the same files, so the same SOP Instance
UIDs: a PACS that already holds an instance keeps one copy.

Credentials come only from the environment (``SPECTGAN_PACS_USERNAME``, ``SPECTGAN_PACS_PASSWORD``): HTTP basic
authentication for STOW-RS, DICOM User Identity Negotiation (username and passcode) for C-STORE.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import unquote, urlsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.status import code_to_category
from requests.adapters import HTTPAdapter

from spectgan.errors import SpectganError
from spectgan.files import atomic_write_bytes

USERNAME_ENV = "SPECTGAN_PACS_USERNAME"
PASSWORD_ENV = "SPECTGAN_PACS_PASSWORD"
CALLING_AE_TITLE = "SPECTGAN"
DEFAULT_DICOM_PORT = 104
TIMEOUT_S = 30.0
OUTBOX = "outbox"
PENDING, CONFIRMED = "pending", "confirmed"
SEND_ORDER = {"SEG": 1, "SR": 2}  # images first, then the objects that reference them
URL_FORMS = "dicom://AET@host:port (C-STORE) or http(s)://host:port/dicom-web (STOW-RS)"


class PacsError(SpectganError):
    """The PACS did not confirm every instance; the message says which, why, and what stays pending."""


class PacsUnavailableError(PacsError):
    """The PACS cannot be reached or stopped answering."""


class PacsAuthenticationError(PacsError):
    """The PACS refused the credentials (or needs some)."""


class PacsRejectedError(PacsError):
    """The PACS refused one instance; the others can still be sent."""


@dataclass(frozen=True)
class PacsTarget:
    """A parsed PACS URL; ``url`` is what the outbox records (never with credentials)."""

    url: str
    protocol: str  # "dicom" (C-STORE) or "dicomweb" (STOW-RS)
    host: str = ""
    port: int = 0
    ae_title: str = ""

    @classmethod
    def parse(cls, url: str) -> "PacsTarget":
        parts = urlsplit(url.strip())
        if parts.password is not None:
            raise PacsError(f"the PACS URL must not hold credentials; set {USERNAME_ENV} and {PASSWORD_ENV}")
        try:
            port = parts.port
        except ValueError as error:
            raise PacsError(f"invalid port in PACS URL {url!r}; use {URL_FORMS}") from error
        if parts.scheme == "dicom" and parts.hostname and parts.path in ("", "/"):
            ae_title = unquote(parts.username or "")
            if not re.fullmatch(r"[^\\\x00-\x1f]{1,16}", ae_title) or not ae_title.strip():
                raise PacsError(f"PACS URL {url!r} needs the called AE title (1-16 characters, no backslash): "
                                f"dicom://AET@host:port")
            port = port or DEFAULT_DICOM_PORT
            return cls(f"dicom://{ae_title}@{parts.hostname}:{port}", "dicom", parts.hostname, port, ae_title)
        if parts.scheme in ("http", "https") and parts.hostname:
            if parts.username is not None:
                raise PacsError(f"the PACS URL must not hold credentials; set {USERNAME_ENV} and {PASSWORD_ENV}")
            return cls(f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}", "dicomweb")
        raise PacsError(f"unsupported PACS URL {url!r}; use {URL_FORMS}")


@dataclass
class OutboxEntry:
    """One instance in the outbox: its file (relative to the exported folder) and its state per destination."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    file: str
    destinations: dict[str, dict] = field(default_factory=dict)

    def status(self, url: str) -> str | None:
        return self.destinations.get(url, {}).get("status")

    def record(self, folder: Path, url: str, status: str, error: str | None = None) -> None:
        """Set and save the state for one destination."""
        state = self.destinations.setdefault(url, {"attempts": 0})
        if error is not None or status == CONFIRMED:
            state["attempts"] += 1
        state.update(status=status, error=error, updated=datetime.now().isoformat(timespec="seconds"))
        atomic_write_bytes(_outbox_dir(folder) / f"{self.sop_instance_uid}.json",
                           json.dumps(asdict(self), indent=1).encode())

    @property
    def label(self) -> str:
        return f"{self.modality} {self.sop_instance_uid} ({self.file})"


@dataclass(frozen=True)
class ExportResult:
    """What one destination confirmed: ``sent`` now, ``already_confirmed`` before."""

    destination: str
    sent: int
    already_confirmed: int

    def __str__(self) -> str:
        return (f"{self.destination}: {self.sent} instances confirmed now, {self.already_confirmed} confirmed "
                f"before; nothing pending")


def pacs_credentials() -> tuple[str, str] | None:
    """(username, password) from the environment, or None when neither is set."""
    username, password = os.environ.get(USERNAME_ENV, ""), os.environ.get(PASSWORD_ENV, "")
    if bool(username) != bool(password):
        raise PacsAuthenticationError(f"set both {USERNAME_ENV} and {PASSWORD_ENV} (only one is set)")
    return (username, password) if username else None


def export_folder(folder: str | Path, pacs_url: str,
                  on_confirmed: Callable[[OutboxEntry], None] | None = None) -> ExportResult:
    """Send every DICOM instance under ``folder`` that ``pacs_url`` has not confirmed yet, through the outbox.

    ``on_confirmed`` is called after each confirmed instance (for progress). Returns only when the PACS has
    confirmed every instance; otherwise raises ``PacsError`` with the instances left pending.
    """
    folder, target = Path(folder), PacsTarget.parse(pacs_url)
    return _send(folder, _queue(folder, target.url), target, on_confirmed)


def retry_pending(folder: str | Path, pacs_url: str | None = None,
                  on_confirmed: Callable[[OutboxEntry], None] | None = None) -> list[ExportResult]:
    """Resend what the outbox of ``folder`` holds as pending, to each destination it was exported to (or only to
    ``pacs_url``). Empty when nothing is pending."""
    folder = Path(folder)
    entries = read_outbox(folder)
    urls = sorted({url for entry in entries for url in entry.destinations if entry.status(url) == PENDING})
    if pacs_url is not None:
        urls = [url for url in urls if url == PacsTarget.parse(pacs_url).url]
    results, errors = [], []
    for url in urls:
        try:
            results.append(_send(folder, entries, PacsTarget.parse(url), on_confirmed))
        except PacsError as error:
            errors.append(error)
    if errors:
        raise type(errors[0])("\n".join(str(error) for error in errors))
    return results


def read_outbox(folder: str | Path) -> list[OutboxEntry]:
    """The outbox entries of an exported folder (empty when it has none)."""
    outbox = _outbox_dir(Path(folder))
    return [OutboxEntry(**json.loads(path.read_text())) for path in sorted(outbox.glob("*.json"))]


def pending_count(folder: str | Path, pacs_url: str | None = None) -> int:
    """How many (instance, destination) pairs of the outbox are pending (for one destination if given)."""
    url = PacsTarget.parse(pacs_url).url if pacs_url else None
    return sum(entry.status(destination) == PENDING for entry in read_outbox(folder)
               for destination in entry.destinations if url in (None, destination))


def _outbox_dir(folder: Path) -> Path:
    return folder / OUTBOX


def _dicom_files(folder: Path) -> Iterator[Path]:
    """DICOM files under ``folder``, outside the outbox and hidden (partly written) files."""
    if not folder.is_dir():
        raise PacsError(f"{folder} is not a folder of DICOM files")
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if (path.is_file() and relative.parts[0] != OUTBOX and not any(part.startswith(".") for part in relative.parts)
                and is_dicom(path)):
            yield path


def _queue(folder: Path, url: str) -> list[OutboxEntry]:
    """Record every DICOM instance under ``folder`` in the outbox, pending for ``url`` unless already confirmed."""
    known = {entry.sop_instance_uid: entry for entry in read_outbox(folder)}
    seen: dict[str, Path] = {}
    for path in _dicom_files(folder):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        uid = str(header.SOPInstanceUID)
        if uid in seen:
            raise PacsError(f"{seen[uid]} and {path} hold the same SOP Instance UID {uid}; export one of them")
        seen[uid] = path
        entry = known.setdefault(uid, OutboxEntry(uid, str(header.SOPClassUID),
                                                  str(header.file_meta.TransferSyntaxUID),
                                                  str(header.get("Modality", "")), ""))
        entry.file = path.relative_to(folder).as_posix()
        if entry.status(url) != CONFIRMED:
            entry.record(folder, url, PENDING)
    if not seen:
        raise PacsError(f"{folder} holds no DICOM files to export")
    return [known[uid] for uid in seen]


def _send(folder: Path, entries: list[OutboxEntry], target: PacsTarget,
          on_confirmed: Callable[[OutboxEntry], None] | None) -> ExportResult:
    """Send the entries pending for ``target``; raise PacsError naming what stays pending unless all confirm."""
    pending = sorted((entry for entry in entries if entry.status(target.url) == PENDING),
                     key=lambda entry: (SEND_ORDER.get(entry.modality, 0), entry.file))
    already_confirmed = sum(entry.status(target.url) == CONFIRMED for entry in entries)
    sent, rejected, stopped = 0, [], None
    if pending:
        try:
            with _open_session(target, pending) as store:
                for entry in pending:
                    try:
                        store(_read_instance(folder, entry))
                    except PacsError as error:
                        entry.record(folder, target.url, PENDING, str(error))
                        if not isinstance(error, PacsRejectedError):
                            raise
                        rejected.append(error)
                        continue
                    entry.record(folder, target.url, CONFIRMED)
                    sent += 1
                    if on_confirmed:
                        on_confirmed(entry)
        except PacsError as error:
            stopped = error
    if stopped or rejected:
        reason = stopped or rejected[0]
        raise type(reason)(
            f"{reason}\n{sent} of {len(pending)} instances confirmed by {target.url}; {len(pending) - sent} stay "
            f"pending in {_outbox_dir(folder)}: resend them with `spectgan export {folder} --retry`")
    return ExportResult(target.url, sent, already_confirmed)


def _read_instance(folder: Path, entry: OutboxEntry) -> Dataset:
    try:
        return pydicom.dcmread(folder / entry.file)
    except (OSError, InvalidDicomError) as error:
        raise PacsRejectedError(f"cannot read {entry.label}: {error}") from error


@contextmanager
def _open_session(target: PacsTarget, entries: list[OutboxEntry]) -> Iterator[Callable[[Dataset], None]]:
    """A ``store(dataset)`` function that returns only when the PACS confirmed the instance."""
    opener = _cstore_session if target.protocol == "dicom" else _stow_session
    with opener(target, entries, pacs_credentials()) as store:
        yield store


def _describe(dataset: Dataset) -> str:
    return f"{dataset.get('Modality', '')} {dataset.SOPInstanceUID}".strip()


def _user_identity(credentials: tuple[str, str] | None) -> list[UserIdentityNegotiation]:
    """DICOM User Identity Negotiation (username and passcode) when credentials are set."""
    if credentials is None:
        return []
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 2
    identity.primary_field, identity.secondary_field = (value.encode() for value in credentials)
    return [identity]


@contextmanager
def _cstore_session(target: PacsTarget, entries: list[OutboxEntry],
                    credentials: tuple[str, str] | None) -> Iterator[Callable[[Dataset], None]]:
    """One association with a presentation context per SOP class (and transfer syntax) of the entries."""
    ae = AE(ae_title=CALLING_AE_TITLE)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    contexts: dict[str, set[str]] = {}
    for entry in entries:
        syntax = UID(entry.transfer_syntax_uid)
        contexts.setdefault(entry.sop_class_uid, set()).update(
            [syntax] if syntax.is_compressed else [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes))
    # The rejection PDU is noted as it arrives: when the PACS closes the socket right after it, pynetdicom may
    # report an abort instead of the rejection.
    rejections: list[str] = []

    def note_rejection(event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rejections.append(event.pdu.reason_str)

    association = ae.associate(target.host, target.port, ae_title=target.ae_title,
                               ext_neg=_user_identity(credentials), evt_handlers=[(evt.EVT_PDU_RECV, note_rejection)])
    if association.is_rejected or rejections:
        raise PacsError(f"the PACS at {target.url} rejected the association ({', '.join(rejections) or 'no reason'})"
                        f": check the called AE title {target.ae_title!r} and that the PACS accepts the calling AE "
                        f"title {CALLING_AE_TITLE!r}")
    if not association.is_established:
        raise PacsUnavailableError(f"cannot reach the PACS at {target.url}: no DICOM association (is it running, "
                                   f"are host and port right?)")

    def store(dataset: Dataset) -> None:
        if not association.is_established:
            raise PacsUnavailableError(f"the PACS at {target.url} closed the association before {_describe(dataset)}")
        try:
            status = association.send_c_store(dataset)
        except ValueError as error:
            raise PacsRejectedError(f"cannot send {_describe(dataset)} to {target.url}: {error}") from error
        except RuntimeError as error:
            raise PacsUnavailableError(f"lost the association with {target.url}: {error}") from error
        if "Status" not in status:
            raise PacsUnavailableError(f"the PACS at {target.url} did not answer the C-STORE of "
                                       f"{_describe(dataset)} (connection lost or timed out)")
        if status.Status != 0x0000:
            comment = f": {status.ErrorComment}" if "ErrorComment" in status else ""
            raise PacsRejectedError(f"the PACS at {target.url} did not store {_describe(dataset)}: C-STORE status "
                                    f"0x{status.Status:04X} ({code_to_category(status.Status)}){comment}")

    try:
        yield store
    finally:
        if association.is_established:
            association.release()


class _TimeoutAdapter(HTTPAdapter):
    """requests sends without a timeout unless asked; every STOW-RS request gets one."""

    def send(self, request, **kwargs):
        kwargs["timeout"] = kwargs.get("timeout") or TIMEOUT_S
        return super().send(request, **kwargs)


@contextmanager
def _stow_session(target: PacsTarget, entries: list[OutboxEntry],
                  credentials: tuple[str, str] | None) -> Iterator[Callable[[Dataset], None]]:
    """One HTTP session; a STOW-RS request per instance, so each is confirmed on its own."""
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, _TimeoutAdapter())
    session.auth = credentials
    client = DICOMwebClient(url=target.url, session=session)
    client.set_http_retry_params(retry=False)  # it would retry a refused connection for 30 s; the outbox retries

    def store(dataset: Dataset) -> None:
        try:
            response = client.store_instances([dataset])
        except requests.HTTPError as error:
            raise _http_error(error.response, target, dataset, credentials) from error
        except requests.RequestException as error:
            raise PacsUnavailableError(f"cannot reach the PACS at {target.url}: {type(error).__name__}") from error
        failed = response.get("FailedSOPSequence") or []
        if failed:
            raise PacsRejectedError(f"the PACS at {target.url} did not store {_describe(dataset)}: failure reason "
                                    f"{failed[0].get('FailureReason', 'not given')}")
        confirmed = {item.ReferencedSOPInstanceUID for item in response.get("ReferencedSOPSequence") or []}
        if dataset.SOPInstanceUID not in confirmed:
            raise PacsRejectedError(f"the PACS at {target.url} did not confirm {_describe(dataset)} (its STOW-RS "
                                    "response does not list it)")

    try:
        yield store
    finally:
        session.close()


def _http_error(response: requests.Response, target: PacsTarget, dataset: Dataset,
                credentials: tuple[str, str] | None) -> PacsError:
    """The PacsError for a STOW-RS answer with an HTTP error status."""
    code = response.status_code
    if code in (401, 403):
        who = f"user {credentials[0]!r}" if credentials else f"no credentials ({USERNAME_ENV} is not set)"
        return PacsAuthenticationError(f"authentication failed at {target.url} (HTTP {code}) with {who}; set "
                                       f"{USERNAME_ENV} and {PASSWORD_ENV} to an account of the PACS")
    if code in (404, 405):
        return PacsError(f"{target.url} has no STOW-RS endpoint (HTTP {code}); the URL must be the DICOMweb "
                         "root, e.g. http://host:port/dicom-web")
    return PacsRejectedError(f"the PACS at {target.url} did not store {_describe(dataset)}: HTTP {code} "
                             f"{response.reason} {response.text[:200]}".rstrip())


def add_export_command(subparsers) -> None:
    """``spectgan export DIR --pacs URL`` and ``spectgan export DIR --retry``."""
    parser = subparsers.add_parser(
        "export", help="send DICOM files to a PACS (C-STORE or STOW-RS) through a local outbox",
        description=f"Send every DICOM file under DIR to the PACS at URL ({URL_FORMS}); what the PACS does not "
                    f"confirm stays pending in DIR/{OUTBOX} for --retry. Credentials come from {USERNAME_ENV} and "
                    f"{PASSWORD_ENV}.")
    parser.add_argument("folder", metavar="DIR", nargs="?", default=".", help="folder of DICOM files (default: .)")
    parser.add_argument("--pacs", metavar="URL", help=f"destination: {URL_FORMS}")
    parser.add_argument("--retry", action="store_true",
                        help="resend what the outbox holds as pending (to --pacs only, if given)")
    parser.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    if args.retry:
        results = retry_pending(args.folder, args.pacs)
        print("\n".join(map(str, results)) if results else f"nothing pending in {Path(args.folder) / OUTBOX}")
        return 0
    if not args.pacs:
        raise PacsError(f"give --pacs URL ({URL_FORMS}) or --retry")
    print(export_folder(args.folder, args.pacs))
    return 0
