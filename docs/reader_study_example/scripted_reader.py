"""Scripted readers for the example reader study: NOT human readers.

Each one goes through the running server exactly as the reading page does (its link, the CSRF cookie and header,
one case at a time) and judges the PNG it is shown, never the key:

- ``texture``: the high-frequency energy of the image (mean squared Laplacian over the brain / mean brightness^2);
- ``brightness``: the median brightness of the brighter half of the brain;
- ``coin``: a seeded coin flip with a random confidence.

``texture`` and ``brightness`` learn a threshold and its direction from the practice block's feedback (midway between
the practice cases' real and synthetic means), and their confidence grows with the distance from that threshold.

    python docs/reader_study_example/scripted_reader.py http://127.0.0.1:8765 STUDY/readers.csv
"""
from __future__ import annotations

import csv
import io
import sys

import numpy as np
import requests
from matplotlib.image import imread

RULES = ("texture", "brightness", "coin")


def luminance(png: bytes) -> np.ndarray:
    """The shown image's brightness [H, W] in [0, 1] (mean of the colour channels)."""
    return imread(io.BytesIO(png), format="png")[..., :3].mean(axis=-1)


def feature(rule: str, png: bytes) -> float:
    image = luminance(png)
    brain = image > 0.25 * image.max()
    if rule == "texture":
        laplacian = (4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1] - image[1:-1, :-2] - image[1:-1, 2:])
        return float((laplacian[brain[1:-1, 1:-1]] ** 2).mean() / image[brain].mean() ** 2)
    return float(np.median(image[brain][image[brain] >= np.median(image[brain])]))


class Session:
    """One reader's link, used as the page uses it."""

    def __init__(self, base: str, url: str):
        self.http, self.base, self.token = requests.Session(), base.rstrip("/"), url.rsplit("/", 1)[1]
        self.http.get(self.base + url, timeout=30).raise_for_status()  # sets the CSRF cookie
        self.api = f"{self.base}/api/{self.token}"

    def state(self) -> dict:
        return self.http.get(f"{self.api}/state", timeout=30).json()

    def image(self, case: str) -> bytes:
        return self.http.get(f"{self.api}/image/{case}.png", timeout=30).content

    def answer(self, state: dict, answer: str, confidence: int, seconds: float) -> dict:
        body = {"case": state["case"], "answer": answer, "confidence": confidence, "reason": "", "seconds": seconds}
        response = self.http.post(f"{self.api}/answer", json=body, headers={"X-CSRF-Token": state["csrf"]}, timeout=30)
        response.raise_for_status()
        return response.json()


def read(session: Session, rule: str, rng: np.random.Generator) -> int:
    """Answer every remaining case of one reader; returns the number of study answers given."""
    seen: dict[str, list[float]] = {"real": [], "synthetic": []}
    given, state = 0, session.state()
    while state["phase"] != "done":
        value = feature(rule, session.image(state["case"])) if rule != "coin" else 0.0
        if rule == "coin" or not (seen["real"] and seen["synthetic"]):
            answer, confidence = str(rng.choice(["real", "synthetic"])), int(rng.integers(1, 6))
        else:
            real, synthetic = np.mean(seen["real"]), np.mean(seen["synthetic"])
            threshold, spread = (real + synthetic) / 2, abs(synthetic - real) / 2 or 1.0
            answer = "synthetic" if (value > threshold) == (synthetic > real) else "real"
            confidence = int(np.clip(1 + abs(value - threshold) / spread * 2, 1, 5))
        result = session.answer(state, answer, confidence, seconds=float(rng.uniform(2, 9)))
        if result["feedback"]:
            seen[result["feedback"]["truth"]].append(value)
        else:
            given += 1
        state = result["state"]
    return given


def main(base: str, readers_csv: str) -> None:
    with open(readers_csv, newline="") as stream:
        readers = list(csv.DictReader(stream))
    for index, (row, rule) in enumerate(zip(readers, RULES * len(readers))):
        given = read(Session(base, row["url"]), rule, np.random.default_rng(index))
        print(f"{row['reader']}: scripted '{rule}' reader, {given} answers")


if __name__ == "__main__":
    main(*sys.argv[1:3])
