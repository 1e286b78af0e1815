"""The study folder shared by ``create``, ``serve`` and ``analyze``: what readers see, what they never see, and the
answer sheets.

::

    STUDY/
      study.json             public settings: display windows per level, each reader's case order, practice order
      readers.csv            reader,token,url: one secret link per reader (hand each reader theirs; never served)
      cases/<id>.png         blinded study cases, served by id to the readers whose order holds them
      practice/<id>.png      practice cases (answered with feedback, kept out of the analysis)
      private/key.csv        id,block,truth,level,pattern,side,source: the key (never served)
      private/secret         the server's key for the per-reader CSRF tokens
      answers/<reader>.json  one answer sheet per reader, rewritten atomically after every answer

Case ids are random hex strings: they say nothing about the truth or the order in which the cases were made.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from spectgan.conditions import Condition, parse_condition
from spectgan.errors import SpectganError
from spectgan.files import atomic_write_bytes

TRUTHS = ("real", "synthetic")
BLOCKS = ("study", "practice")
CONFIDENCES = range(1, 6)  # 1 = guessing ... 5 = certain, about the answer given
MAX_REASON_CHARS = 500
MAX_SECONDS = 24 * 3600.0
KEY_COLUMNS = ("id", "block", "truth", "level", "pattern", "side", "source")
READER_COLUMNS = ("reader", "token", "url")
STUDY_FILE = "study.json"
READERS_FILE = "readers.csv"
KEY_FILE = "private/key.csv"
SECRET_FILE = "private/secret"
ANSWERS_DIR = "answers"
IMAGE_DIRS = {"study": "cases", "practice": "practice"}


@dataclass(frozen=True)
class KeyEntry:
    """One case of the key: its block (study | practice), truth (real | synthetic), condition and source."""

    id: str
    block: str
    truth: str
    condition: Condition
    source: str

    def to_row(self) -> dict[str, str]:
        condition = self.condition.to_dict()
        return {"id": self.id, "block": self.block, "truth": self.truth, "level": condition["level"],
                "pattern": condition["pattern"], "side": condition["side"] or "", "source": self.source}


@dataclass(frozen=True)
class Reader:
    reader: str
    token: str
    url: str


@dataclass(frozen=True)
class Answer:
    """One reader's answer to one case: ``answer`` in TRUTHS, ``confidence`` 1-5, ``seconds`` on the case."""

    case: str
    answer: str
    confidence: int
    reason: str
    seconds: float
    answered_at: str

    @property
    def rating(self) -> int:
        """The answer and its confidence on one 10-point scale for ROC analysis: 1 = certainly real, 10 = certainly
        synthetic (real with confidence c -> 6 - c, synthetic with confidence c -> 5 + c)."""
        return 5 + self.confidence if self.answer == "synthetic" else 6 - self.confidence


def parse_answer(payload: object) -> Answer:
    """Validate one answer as it arrives (a JSON object); ValueError names what is allowed."""
    if not isinstance(payload, dict):
        raise ValueError("an answer is a JSON object with case, answer, confidence, reason and seconds")
    answer, confidence = payload.get("answer"), payload.get("confidence")
    reason, seconds, case = payload.get("reason") or "", payload.get("seconds"), payload.get("case")
    if not isinstance(case, str) or not case:
        raise ValueError("case must be the id of the case on screen")
    if answer not in TRUTHS:
        raise ValueError(f"answer must be one of {', '.join(TRUTHS)}, got {answer!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, int) or confidence not in CONFIDENCES:
        raise ValueError(f"confidence must be an integer from 1 (guessing) to 5 (certain), got {confidence!r}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"reason must be text of at most {MAX_REASON_CHARS} characters")
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds)
            or not 0 <= seconds <= MAX_SECONDS):
        raise ValueError(f"seconds must be a number from 0 to {MAX_SECONDS:.0f}, got {seconds!r}")
    return Answer(case, answer, confidence, reason.strip(), float(seconds),
                  datetime.now(timezone.utc).isoformat(timespec="seconds"))


def read_info(study_dir: Path) -> dict:
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise SpectganError(f"{study_dir} is not a reader study: {STUDY_FILE} is missing "
                            "(make one with `spectgan reader-study create`)")
    return json.loads(path.read_text())


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise SpectganError(f"{path} is missing; the reader study is incomplete")
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        if tuple(reader.fieldnames or ()) != columns:
            raise SpectganError(f"{path} must have the columns {','.join(columns)}, has {reader.fieldnames}")
        return list(reader)


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    lines = [",".join(columns)] + [",".join(row[column] for column in columns) for row in rows]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def read_readers(study_dir: Path) -> list[Reader]:
    return [Reader(**row) for row in _read_csv(Path(study_dir) / READERS_FILE, READER_COLUMNS)]


def read_key(study_dir: Path) -> dict[str, KeyEntry]:
    """The key, by case id (study and practice cases)."""
    key = {}
    for row in _read_csv(Path(study_dir) / KEY_FILE, KEY_COLUMNS):
        condition = parse_condition(row["level"], row["pattern"], row["side"] or None)
        key[row["id"]] = KeyEntry(row["id"], row["block"], row["truth"], condition, row["source"])
    return key


def sheet_path(study_dir: Path, reader: str) -> Path:
    return Path(study_dir) / ANSWERS_DIR / f"{reader}.json"


def read_sheet(study_dir: Path, reader: str) -> dict[str, list[Answer]]:
    """A reader's answers so far: ``{"practice": [...], "study": [...]}`` (empty lists before the first answer)."""
    path = sheet_path(study_dir, reader)
    data = json.loads(path.read_text()) if path.is_file() else {}
    return {block: [Answer(**entry) for entry in data.get(block, [])] for block in BLOCKS}


def write_sheet(study_dir: Path, reader: str, sheet: dict[str, list[Answer]]) -> None:
    """Rewrite a reader's answer sheet atomically (a temporary file renamed over it): complete or unchanged."""
    data = {"reader": reader, **{block: [vars(answer) for answer in sheet[block]] for block in BLOCKS}}
    atomic_write_bytes(sheet_path(study_dir, reader), (json.dumps(data, indent=1) + "\n").encode())
