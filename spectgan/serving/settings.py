"""The server's settings: each from the app conf (``--conf KEY VALUE``), else an environment variable, else a default.

| conf key             | environment variable           | default                                   |
| -------------------- | ------------------------------ | ----------------------------------------- |
| models               | (none)                         | all: every bundle found in the models folder |
| models_dir           | SPECTGAN_MODELS_DIR            | <repository>/models                       |
| cohort               | SPECTGAN_COHORT                | sample_data/cohorts/default               |
| cohorts_dir          | SPECTGAN_COHORTS_DIR           | sample_data/cohorts: cohorts a train request may name by id |
| keep_versions        | SPECTGAN_KEEP_VERSIONS         | 5: published versions (and candidates) kept per model |
| generation_workers   | SPECTGAN_GENERATION_WORKERS    | one worker process per core; 0: request threads |
| api_token            | SPECTGAN_API_TOKEN             | none: no authentication                   |
| session_hours        | SPECTGAN_SESSION_HOURS         | 8: how long a browser's login lasts       |
| max_upload_mb        | SPECTGAN_MAX_UPLOAD_MB         | 64                                        |
| pacs                 | SPECTGAN_PACS_URL              | the datastore, when it is a DICOMweb server; else none |

The PACS is where the spectgan page exports to (``dicom://AET@host:port`` or ``http(s)://host:port/dicom-web``); its
credentials come from ``SPECTGAN_PACS_USERNAME`` and ``SPECTGAN_PACS_PASSWORD`` (``spectgan.export.pacs``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from spectgan.models.versions import DEFAULT_KEEP

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODELS_DIR = REPOSITORY_ROOT / "models"
DEFAULT_COHORT_DIR = REPOSITORY_ROOT / "sample_data" / "cohorts" / "default"
SAMPLE_STUDIES_DIR = REPOSITORY_ROOT / "sample_data" / "studies"
MODELS_DIR_ENV = "SPECTGAN_MODELS_DIR"
COHORT_ENV = "SPECTGAN_COHORT"
COHORTS_DIR_ENV = "SPECTGAN_COHORTS_DIR"
KEEP_VERSIONS_ENV = "SPECTGAN_KEEP_VERSIONS"
GENERATION_WORKERS_ENV = "SPECTGAN_GENERATION_WORKERS"
API_TOKEN_ENV = "SPECTGAN_API_TOKEN"
MAX_UPLOAD_ENV = "SPECTGAN_MAX_UPLOAD_MB"
PACS_URL_ENV = "SPECTGAN_PACS_URL"
SESSION_HOURS_ENV = "SPECTGAN_SESSION_HOURS"
DEFAULT_SESSION_HOURS = 8  # a working day at the browser workstation
DEFAULT_MAX_UPLOAD_MB = 64  # a reference SPECT volume takes a few MB


def _setting(conf: Mapping[str, str] | None, key: str, env: str) -> str | None:
    """The app conf ``key``, else the environment variable ``env``; None when neither is set (or blank)."""
    value = (conf or {}).get(key) or os.environ.get(env)
    return str(value).strip() if value is not None and str(value).strip() else None


def configured_path(conf: Mapping[str, str] | None, key: str, env: str, default: Path) -> Path:
    """A folder from the app conf ``key``, else the environment variable ``env``, else ``default``."""
    value = _setting(conf, key, env)
    return Path(value).expanduser().resolve() if value else default


def models_dir_from(conf: Mapping[str, str] | None = None) -> Path:
    """The models folder: conf ``models_dir``, else $SPECTGAN_MODELS_DIR, else <repository>/models."""
    return configured_path(conf, "models_dir", MODELS_DIR_ENV, DEFAULT_MODELS_DIR)


def cohort_dir_from(conf: Mapping[str, str] | None = None) -> Path:
    """The training cohort: conf ``cohort``, else $SPECTGAN_COHORT, else sample_data/cohorts/default."""
    return configured_path(conf, "cohort", COHORT_ENV, DEFAULT_COHORT_DIR)


def cohorts_dir_from(conf: Mapping[str, str] | None = None) -> Path:
    """The folder of cohorts a train request may name by id (their folder names): conf ``cohorts_dir``, else
    $SPECTGAN_COHORTS_DIR, else sample_data/cohorts."""
    return configured_path(conf, "cohorts_dir", COHORTS_DIR_ENV, DEFAULT_COHORT_DIR.parent)


def keep_versions_from(conf: Mapping[str, str] | None = None) -> int:
    """Published versions (and candidates) kept per model: conf ``keep_versions``, else $SPECTGAN_KEEP_VERSIONS,
    else 5; ValueError unless a whole number of at least 1."""
    value = _setting(conf, "keep_versions", KEEP_VERSIONS_ENV)
    kept = DEFAULT_KEEP if value is None else _whole_number(value, "keep_versions", "of versions")
    if kept < 1:
        raise ValueError(f"keep_versions must be at least 1, got {kept}")
    return kept


def _whole_number(text: str, name: str, meaning: str) -> int:
    """``text`` as a whole number; ValueError "``name`` must be a whole number ``meaning``" otherwise."""
    if not text.isdecimal():
        raise ValueError(f"{name} must be a whole number {meaning}, got {text!r}")
    return int(text)


def generation_workers_from(conf: Mapping[str, str] | None = None) -> int:
    """Worker processes for generation: app conf ``generation_workers``, else $SPECTGAN_GENERATION_WORKERS, else
    the number of cores; 0 generates in the server's own request threads. ValueError for anything else."""
    value = _setting(conf, "generation_workers", GENERATION_WORKERS_ENV)
    if value is None:
        return os.cpu_count() or 1
    return _whole_number(value, "generation_workers", "of processes (0: generate in the server's threads)")


def api_token_from(conf: Mapping[str, str] | None = None) -> str | None:
    """The bearer token every request must send (app conf ``api_token``, else $SPECTGAN_API_TOKEN); None: no
    authentication (the default, for a server on 127.0.0.1)."""
    return _setting(conf, "api_token", API_TOKEN_ENV)


def session_seconds_from(conf: Mapping[str, str] | None = None) -> int:
    """How long a browser session lasts after its login (the spectgan page and OHIF on a server with a token), in
    seconds: app conf ``session_hours``, else $SPECTGAN_SESSION_HOURS, else 8 hours."""
    value = _setting(conf, "session_hours", SESSION_HOURS_ENV)
    hours = DEFAULT_SESSION_HOURS if value is None else _whole_number(value, "session_hours", "of hours")
    if hours < 1:
        raise ValueError(f"session_hours must be at least 1, got {value!r}")
    return hours * 3600


def max_upload_bytes_from(conf: Mapping[str, str] | None = None) -> int:
    """The largest upload accepted, in bytes: app conf ``max_upload_mb``, else $SPECTGAN_MAX_UPLOAD_MB, else 64 MB."""
    value = _setting(conf, "max_upload_mb", MAX_UPLOAD_ENV)
    megabytes = DEFAULT_MAX_UPLOAD_MB if value is None else _whole_number(value, "max_upload_mb", "of megabytes")
    return megabytes * 1024 * 1024


def is_dicomweb(studies: str | None) -> bool:
    """True when the datastore (``--studies``) is a DICOMweb server rather than a folder."""
    return str(studies or "").strip().lower().startswith(("http://", "https://"))


def pacs_url_from(conf: Mapping[str, str] | None, studies: str | None) -> str | None:
    """The PACS the page exports to: app conf ``pacs``, else $SPECTGAN_PACS_URL, else the datastore when it is a
    DICOMweb server (``studies``); None: no export."""
    value = _setting(conf, "pacs", PACS_URL_ENV)
    if value is None and is_dicomweb(studies):
        value = str(studies).strip()
    return value.rstrip("/") if value else None
