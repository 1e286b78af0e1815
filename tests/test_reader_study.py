"""The reader study: analysis on answer sheets with known results, a created study's balance and blinding, and a real
server driven by a scripted reader in a real headless Chromium (Selenium with Debian's chromium and chromedriver)."""
from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from gan_toy_cohort import single_thread, toy_bundle, toy_cohort, toy_run  # noqa: F401 (fixtures)

from spectgan.conditions import Condition, Level, Pattern, Side
from spectgan.errors import SpectganError
from spectgan.reader_study.analysis import analyze_study, auc_from_histograms, binomial_power
from spectgan.reader_study.create import create_study
from spectgan.reader_study.study import (KEY_COLUMNS, KEY_FILE, Answer, KeyEntry, read_key, read_readers,
                                         read_sheet, write_csv, write_sheet)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_BUNDLE = ROOT / "models" / "spect_fastgan_A"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
N_CASES, N_PRACTICE = 8, 2


# --- analysis on answer sheets with known results ---------------------------------------------------------------

def write_sheets(study: Path, truths: list[str], calls: dict[str, list[tuple[str, int]]]) -> Path:
    """A minimal study folder: cases c00.. with ``truths``; each reader answered every case with (answer, confidence),
    and one practice case wrongly (practice answers are never analysed)."""
    conditions = [Condition(Level.BG, Pattern.NORMAL), Condition(Level.COR, Pattern.UNILATERAL, Side.LEFT)]
    entries = [KeyEntry(f"c{i:02d}", "study", truth, conditions[i % 2], "test") for i, truth in enumerate(truths)]
    practice = KeyEntry("p00", "practice", "synthetic", conditions[0], "test")
    write_csv(study / KEY_FILE, KEY_COLUMNS, [entry.to_row() for entry in entries + [practice]])
    (study / "study.json").write_text(json.dumps({"orders": {reader: [e.id for e in entries] for reader in calls},
                                                  "practice": [practice.id]}))
    for reader, answers in calls.items():
        sheet = [Answer(entry.id, answer, confidence, "", 4.0 + i % 3, "2026-11-29T00:00:00+00:00")
                 for i, (entry, (answer, confidence)) in enumerate(zip(entries, answers))]
        wrong = Answer(practice.id, "real", 5, "", 1.0, "2026-11-29T00:00:00+00:00")
        write_sheet(study, reader, {"practice": [wrong], "study": sheet})
    analyze_study(study)
    return study / "analysis"


def results_of(analysis: Path) -> dict:
    return json.loads((analysis / "results.json").read_text())


TRUTHS = ["real", "synthetic"] * 20


def test_all_correct_gives_accuracy_1_and_auc_1(tmp_path):
    confidences = [1 + i % 5 for i in range(len(TRUTHS))]
    analysis = write_sheets(tmp_path, TRUTHS, {"r1": list(zip(TRUTHS, confidences)),
                                               "r2": list(zip(TRUTHS, confidences[::-1]))})
    results = results_of(analysis)
    pooled = results["pooled"]
    assert pooled["accuracy"]["value"] == 1.0 and pooled["accuracy"]["p_vs_half"] < 1e-6
    assert pooled["sensitivity"]["value"] == pooled["specificity"]["value"] == 1.0
    assert pooled["roc"]["auc"] == 1.0 and pooled["roc"]["ci"] == [1.0, 1.0]
    assert all(reader["roc"]["auc"] == 1.0 for reader in results["readers"].values())
    assert results["agreement"]["kappa"] == pytest.approx(1.0)
    assert "better than chance" in results["conclusion"]
    assert set(results["conditions"]) == {"BG-normal", "COR-unilateral"}
    for figure in ("roc.png", "accuracy.png"):
        assert (analysis / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (analysis / "report.md").read_text()
    assert "| **pooled** | 80 | 1.00 (0.95-1.00) |" in report and "Fleiss' kappa" in report


def test_coin_flip_answers_give_a_ci_that_contains_one_half(tmp_path):
    rng = np.random.default_rng(11)
    truths = list(rng.choice(["real", "synthetic"], size=60))
    calls = {f"r{i}": [(str(a), int(c)) for a, c in zip(rng.choice(["real", "synthetic"], size=60),
                                                          rng.integers(1, 6, size=60))] for i in range(3)}
    results = results_of(write_sheets(tmp_path, truths, calls))
    low, high = results["pooled"]["accuracy"]["ci"]
    assert low < 0.5 < high
    assert results["pooled"]["roc"]["ci"][0] < 0.5 < results["pooled"]["roc"]["ci"][1]
    assert "did not tell synthetic from real slices apart" in results["conclusion"]
    assert f"is {results['power']['pooled']['power']:.0%} for the pooled answers" in results["conclusion"]


def test_two_readers_who_always_agree_have_kappa_1(tmp_path):
    rng = np.random.default_rng(5)
    calls = [(str(a), 3) for a in rng.choice(["real", "synthetic"], size=len(TRUTHS))]
    results = results_of(write_sheets(tmp_path, TRUTHS, {"r1": calls, "r2": calls}))
    assert results["agreement"] == {"kappa": pytest.approx(1.0), "readers": 2, "cases": len(TRUTHS)}


def test_always_wrong_readers_are_worse_than_chance(tmp_path):
    flipped = [("synthetic" if truth == "real" else "real", 5) for truth in TRUTHS]
    results = results_of(write_sheets(tmp_path, TRUTHS, {"r1": flipped}))
    assert results["pooled"]["accuracy"]["value"] == 0.0 and results["pooled"]["roc"]["auc"] == 0.0
    assert results["agreement"]["kappa"] is None
    assert "less often than chance" in results["conclusion"]


def test_auc_matches_scikit_learn_on_tied_ratings():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    labels, ratings = rng.integers(0, 2, size=300), rng.integers(1, 11, size=300)
    histogram = [np.bincount(ratings[labels == value] - 1, minlength=10) for value in (1, 0)]
    assert auc_from_histograms(*histogram) == pytest.approx(roc_auc_score(labels, ratings))


def test_binomial_power_is_the_size_under_chance_and_grows_with_n():
    from scipy.stats import binom, binomtest

    for n in (1, 8, 25, 60):  # the rejection region is binomtest's
        rejected = [k for k in range(n + 1) if binomtest(k, n, 0.5).pvalue <= 0.05]
        assert binomial_power(n) == pytest.approx(binom.pmf(rejected, n, 0.65).sum(), abs=1e-12)
    assert binomial_power(60, accuracy=0.5) <= 0.05
    assert binomial_power(60) < binomial_power(180) < binomial_power(400)
    assert binomial_power(400) > 0.99


# --- create -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study(toy_cohort, toy_bundle, tmp_path_factory) -> Path:
    """A study of 8 cases, 2 practice cases and 2 readers: the toy cohort's test split against a tiny model trained on
    the toy cohort's train split (64 px, the same counts)."""
    return create_study(toy_cohort, toy_bundle, tmp_path_factory.mktemp("reader_study") / "study", n_cases=N_CASES,
                        n_readers=2, seed=3, n_practice=N_PRACTICE)


def test_create_writes_a_balanced_blinded_study(study):
    key = read_key(study)
    cases = [entry for entry in key.values() if entry.block == "study"]
    assert len(cases) == N_CASES and sum(entry.block == "practice" for entry in key.values()) == N_PRACTICE
    for condition in {entry.condition for entry in cases}:
        truths = sorted(entry.truth for entry in cases if entry.condition == condition)
        assert truths == ["real", "synthetic"] * (len(truths) // 2)
    assert all(entry.source.startswith("SYNTHETIC") == (entry.truth == "synthetic") for entry in key.values())
    public = [path for path in study.rglob("*") if path.is_file() and "private" not in path.parts]
    assert sorted(path.name for path in study.glob("cases/*.png")) == sorted(f"{entry.id}.png" for entry in cases)
    assert all(len(entry.id) == 10 and int(entry.id, 16) >= 0 for entry in key.values())
    for path in public:
        if path.suffix in (".json", ".csv"):
            text = path.read_text()
            assert "truth" not in text and not any(entry.source in text for entry in key.values()), path
    with open(study / "readers.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [list(row) for row in rows] == [["reader", "token", "url"]] * 2
    assert all(row["url"] == f"/read/{row['token']}" for row in rows)
    info = json.loads((study / "study.json").read_text())
    orders = list(info["orders"].values())
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(entry.id for entry in cases) and orders[0] != orders[1]
    sizes = {_png_size(path) for path in study.glob("*/*.png")}
    assert sizes == {(384, 384)}
    assert (study / "private").stat().st_mode & 0o077 == 0


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def test_create_refuses_an_existing_folder_odd_counts_and_a_cohort_of_other_counts(study, toy_cohort, toy_bundle,
                                                                                    tmp_path):
    with pytest.raises(SpectganError, match="never overwritten"):
        create_study(toy_cohort, toy_bundle, study)
    with pytest.raises(SpectganError, match="even number"):
        create_study(toy_cohort, toy_bundle, tmp_path / "odd", n_cases=7)
    with pytest.raises(SpectganError, match="unused .* slice"):
        create_study(toy_cohort, toy_bundle, tmp_path / "big", n_cases=200)
    with pytest.raises(SpectganError, match="differ in brightness"):  # model A was trained on other counts
        create_study(toy_cohort, SHIPPED_BUNDLE, tmp_path / "model_a")
    assert not any(tmp_path.iterdir())


def test_the_same_seed_gives_the_same_cases_in_the_same_orders(study, toy_cohort, toy_bundle, tmp_path):
    again = create_study(toy_cohort, toy_bundle, tmp_path / "again", n_cases=N_CASES, n_readers=2, seed=3,
                         n_practice=N_PRACTICE)

    def orders_by_source(folder: Path) -> dict[str, list[str]]:
        key, info = read_key(folder), json.loads((folder / "study.json").read_text())
        return {reader: [key[case].source for case in order] for reader, order in info["orders"].items()}

    assert orders_by_source(again) == orders_by_source(study)
    assert set(read_key(again)).isdisjoint(read_key(study))  # new random ids


# --- the real server in a real browser --------------------------------------------------------------------------

class Server:
    """``spectgan reader-study serve STUDY --port 0`` as a subprocess; ``url`` read from its first line."""

    def __init__(self, study: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "spectgan.cli", "reader-study", "serve", str(study),
                                         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        if " at http://" not in line:
            self.process.kill()
            raise RuntimeError(f"the server did not start: {line}{self.process.stdout.read()}")
        self.url = line.split(" at ")[1].split()[0].rstrip("/")

    def stop(self) -> int:
        """SIGTERM, as a person's Ctrl-C would; returns the exit code (0 for a clean shutdown)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.process.stdout.close()


@pytest.fixture
def served(study, tmp_path):
    """A fresh copy of the study behind a running server; the server is stopped and must exit cleanly."""
    copy = shutil.copytree(study, tmp_path / "study")
    servers = [Server(copy)]
    yield copy, servers
    assert servers[-1].stop() == 0


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: run `make debs`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # explicit paths: Selenium Manager never runs (it would download)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def wait_for(driver, condition, seconds: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(lambda d: condition(d))


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def press(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def open_case(driver, progress: str) -> None:
    """Wait until the page shows ``progress`` and the case image has loaded."""
    wait_for(driver, lambda d: text_of(d, "progress-text").startswith(progress))
    wait_for(driver, lambda d: d.execute_script("const i = document.getElementById('case-image');"
                                                "return i.complete && i.naturalWidth === 384;"))


def answer_by_keyboard(driver, key_answer: str, confidence: int, reason: str = "") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    press(driver, key_answer, str(confidence))
    if reason:
        driver.find_element(By.ID, "reason").click()
        press(driver, reason)
    press(driver, Keys.ENTER)


def test_a_scripted_reader_completes_a_session_that_survives_reload_and_restart(served, browser):
    from selenium.webdriver.common.keys import Keys

    study, servers = served
    first, second = read_readers(study)
    browser.get(servers[-1].url + first.url)
    for index in range(N_PRACTICE):  # practice with feedback
        open_case(browser, f"Practice case {index + 1} of {N_PRACTICE}")
        answer_by_keyboard(browser, "2", 4)
        wait_for(browser, lambda d: "this slice was" in text_of(d, "feedback"))
        press(browser, Keys.ENTER)
    for index in range(3):
        open_case(browser, f"Case {index + 1} of {N_CASES}")
        answer_by_keyboard(browser, "1" if index % 2 else "2", index + 2, reason="edges" if index == 1 else "")
    open_case(browser, f"Case 4 of {N_CASES}")
    browser.refresh()  # a reload resumes
    open_case(browser, f"Case 4 of {N_CASES}")
    assert servers[-1].stop() == 0  # so does a restart of the server
    servers.append(Server(study))
    browser.get(servers[-1].url + first.url)
    open_case(browser, f"Case 4 of {N_CASES}")
    press(browser, "2", Keys.BACKSPACE, "1", "5", Keys.ENTER)  # Backspace starts the case's answer again
    for index in range(4, N_CASES):
        open_case(browser, f"Case {index + 1} of {N_CASES}")
        answer_by_keyboard(browser, "2", 1)
    wait_for(browser, lambda d: text_of(d, "done").startswith("Thank you"))

    sheet = read_sheet(study, first.reader)
    order = json.loads((study / "study.json").read_text())["orders"][first.reader]
    assert [answer.case for answer in sheet["study"]] == order and len(sheet["practice"]) == N_PRACTICE
    assert [(a.answer, a.confidence) for a in sheet["study"][:4]] == [("synthetic", 2), ("real", 3),
                                                                      ("synthetic", 4), ("real", 5)]
    assert sheet["study"][1].reason == "edges" and all(answer.seconds > 0 for answer in sheet["study"])

    browser.get(servers[-1].url + second.url)  # the second reader starts at their own beginning
    open_case(browser, f"Practice case 1 of {N_PRACTICE}")
    state = requests.get(f"{servers[-1].url}/api/{second.token}/state", timeout=10).json()
    assert set(state) == {"reader", "phase", "index", "total", "case", "practice_total", "csrf"}
    assert state["reader"] == second.reader and state["index"] == 0
    assert not (study / "answers" / f"{second.reader}.json").exists()


def test_the_key_answers_and_links_are_never_served_and_a_wrong_token_is_refused(served):
    study, servers = served
    url, (first, second) = servers[-1].url, read_readers(study)
    requests.get(url + first.url, timeout=10)
    for path in ("/private/key.csv", "/static/../private/key.csv", "/static/%2e%2e/private/key.csv",
                 "/readers.csv", "/study.json", "/answers/reader1.json", f"/api/{first.token}/key",
                 f"/api/{second.token}/answers", "/docs", "/openapi.json"):
        assert requests.get(url + path, timeout=10).status_code == 404, path
    for path in ("/read/not-a-token", "/api/not-a-token/state", f"/api/{first.token[:-1]}/state"):
        assert requests.get(url + path, timeout=10).status_code == 403, path
    key_text = (study / KEY_FILE).read_text()
    state = requests.get(f"{url}/api/{first.token}/state", timeout=10)
    assert state.json()["case"] in key_text and "synthetic" not in state.text and "real" not in state.text


def test_a_cross_site_post_is_refused(served, browser):
    """A page elsewhere that submits a form to the answer URL gets a 403, and the answer sheet stays as it was."""
    study, servers = served
    url, first = servers[-1].url, read_readers(study)[0]
    browser.get(url + first.url)  # the reader's browser holds their CSRF cookie
    open_case(browser, f"Practice case 1 of {N_PRACTICE}")
    case = requests.get(f"{url}/api/{first.token}/state", timeout=10).json()["case"]
    attack = (f"<form method=post action='{url}/api/{first.token}/answer' enctype='text/plain'>"
              f"<input name='{{\"case\":\"{case}\",\"answer\":\"real\",\"confidence\":5,\"seconds\":1,\"x\":\"' "
              "value='\"}'></form><script>document.forms[0].submit()</script>")
    browser.get("data:text/html," + attack)
    refusals = ("cross-origin request refused", "cross-site request refused", "missing or wrong CSRF token")
    wait_for(browser, lambda d: any(refusal in d.page_source for refusal in refusals))  # the server's own 403
    assert not (study / "answers" / f"{first.reader}.json").exists()
    session = requests.Session()
    session.get(url + first.url, timeout=10)
    csrf = session.cookies["reader_csrf"]
    body = {"case": case, "answer": "real", "confidence": 5, "seconds": 1}
    for headers in ({"Origin": "http://evil.example", "X-CSRF-Token": csrf}, {"Sec-Fetch-Site": "cross-site",
                                                                              "X-CSRF-Token": csrf}, {},
                    {"X-CSRF-Token": csrf[:-1]}, {"X-CSRF-Token": "\u00e9" * len(csrf)}):
        assert session.post(f"{url}/api/{first.token}/answer", json=body, headers=headers, timeout=10
                            ).status_code == 403, headers
    assert session.post(f"{url}/api/{first.token}/answer", json=body, headers={"X-CSRF-Token": csrf},
                        timeout=10).status_code == 200
    assert len(read_sheet(study, first.reader)["practice"]) == 1
