"""The spectgan page (/spectgan/) and the bundled OHIF viewer, driven in a real headless Chromium (Selenium with
Debian's chromium and chromedriver) against a real server whose datastore is a real Orthanc (DICOMweb), which is
also the PACS the page exports to: the workstation as a hospital would run it.

The reference studies are two sample studies pushed to Orthanc as NM multi-frame objects; the models are the
shipped bundles (models/). Screenshots and downloads go to the session's temporary folder (pytest keeps the last
few: /tmp/pytest-of-USER/pytest-N/workstation_page0/).
"""
from __future__ import annotations

import csv
import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import SimpleITK as sitk
from dicom_builders import Identity, nm_multiframe
from test_reader_study import CHROMEDRIVER, CHROMIUM, text_of, wait_for

from spectgan.client.http import SpectGANClient
from spectgan.export.dicom import SYNTHETIC_DATA_TAG
from spectgan.export.orthanc import LocalOrthanc
from spectgan.serving.settings import DEFAULT_MODELS_DIR, SAMPLE_STUDIES_DIR
from spectgan.tools.server import ServerProcess

REFERENCES = ("study_normal_axial", "study_unilateral_left_oblique")  # Identity(0), Identity(1) in the PACS
OBLIQUE = Identity(1).series_uid  # the datastore id of study_unilateral_left_oblique
MODEL = "spect_fastgan_A"
WINDOW = (1280, 800)
OHIF_LOAD_S = 90


# --------------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pacs():
    """Orthanc holding the reference studies as NM multi-frame objects (made-up identities of the test builders)."""
    with LocalOrthanc() as orthanc:
        for number, name in enumerate(REFERENCES):
            volume = sitk.ReadImage(str(SAMPLE_STUDIES_DIR / f"{name}.nii.gz"))
            requests.post(f"{orthanc.rest_url}/instances", data=nm_multiframe(volume, Identity(number)),
                          auth=(orthanc.username, orthanc.password), timeout=30).raise_for_status()
        yield orthanc


def workstation_server(pacs, folder: Path, token: str | None = None) -> ServerProcess:
    """The app with the PACS as its DICOMweb datastore (NM series) and export destination (one generation worker;
    ``token``: its API token), logging to ``folder``/server.log."""
    environment = {"MONAI_LABEL_DICOMWEB_USERNAME": pacs.username, "MONAI_LABEL_DICOMWEB_PASSWORD": pacs.password,
                   "MONAI_LABEL_DICOMWEB_SEARCH_FILTER": json.dumps({"Modality": "NM"}),
                   "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(folder / "cache"), **pacs.client_environment()}
    return ServerProcess(pacs.dicomweb_url, DEFAULT_MODELS_DIR, folder / "server.log", environment=environment,
                         conf={"generation_workers": "1"}, token=token)


@pytest.fixture(scope="module")
def server(pacs, tmp_path_factory):
    """The workstation's server, without a token."""
    with workstation_server(pacs, tmp_path_factory.mktemp("workstation")) as process:
        yield process


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """The folder of the module's screenshots and the browser's downloads."""
    return tmp_path_factory.mktemp("workstation_page")


@pytest.fixture(scope="module")
def browser(artifacts):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: run `make debs`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # explicit paths: Selenium Manager never runs (it would download)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(artifacts),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


# ---------------------------------------------------------------------------------------------------------- helpers

def open_page(browser, server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/spectgan/")
    wait_for(browser, lambda d: d.find_element(By.ID, "generate").is_enabled(), 60)
    assert text_of(browser, "error") == ""


def choose(browser, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, element_id)).select_by_value(value)


def press_on(browser, element_id: str, *keys: str) -> None:
    """Focus an element and type keys into it, as a keyboard user would."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, element_id).send_keys(*keys)


def add_condition(browser, level: str, pattern: str, side: str = "", territory: str = "", severity: str = "") -> None:
    from selenium.webdriver.common.keys import Keys

    choose(browser, "level", level)
    choose(browser, "pattern", pattern)
    if side:
        choose(browser, "side", side)
    if territory:
        choose(browser, "territory", territory)
    if severity:
        press_on(browser, "severity", Keys.CONTROL, "a", Keys.NULL, severity)
    press_on(browser, "add-condition", Keys.ENTER)


def generate(browser, seeds: str, expected: int) -> None:
    """Type the seeds and press Enter in the field (submits the request); wait for the progress to finish."""
    from selenium.webdriver.common.keys import Keys

    field = browser.find_element("id", "seeds")
    field.clear()
    field.send_keys(seeds, Keys.ENTER)
    wait_for(browser, lambda d: text_of(d, "progress-text").startswith(("Done", "Stopped")), 240)
    assert text_of(browser, "progress-text").startswith(f"Done: {expected} slice"), text_of(browser, "error")


def record_sent_params(browser) -> None:
    """From now on, the page's browser keeps the params of each generation it sends (read by ``sent_params``)."""
    browser.execute_script("""
        window.sentParams = [];
        const send = window.fetch;
        window.fetch = (url, options) => {
          if (options && options.body instanceof FormData) window.sentParams.push(options.body.get("params"));
          return send(url, options);
        };""")


def sent_params(browser) -> list[dict]:
    """The params of each generation sent since ``record_sent_params``."""
    return [json.loads(params) for params in browser.execute_script("return window.sentParams")]


def table_rows(browser) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#stats-body tr")]


def canvas_halves(browser, index: int) -> tuple[float, float, float]:
    """(grey variance, mean grey of the left half, of the right half) of the index-th result's canvas; grey pixels
    only (outlines and marks are coloured or white text on black)."""
    return tuple(browser.execute_script("""
        const canvas = document.querySelectorAll('.result canvas')[arguments[0]];
        const {width, height} = canvas;
        const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
        let sum = 0, squares = 0, n = 0; const half = [[0, 0], [0, 0]];
        for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
          const i = 4 * (y * width + x), r = data[i], g = data[i + 1], b = data[i + 2];
          if (r !== g || g !== b || r === 255) continue;
          sum += r; squares += r * r; n++;
          const side = x < width / 2 ? 0 : 1; half[side][0] += r; half[side][1]++;
        }
        const mean = sum / n;
        return [squares / n - mean * mean, half[0][0] / half[0][1], half[1][0] / half[1][1]];
    """, index))


def export_selected(browser) -> None:
    from selenium.webdriver.common.keys import Keys

    press_on(browser, "select-all", Keys.SPACE)
    press_on(browser, "export", Keys.ENTER)
    wait_for(browser, lambda d: text_of(d, "export-status").startswith(("Exported", "Export failed")), 120)


def study_datasets(pacs, study_uid: str) -> list[pydicom.Dataset]:
    """Every instance Orthanc holds for a study, read from its files."""
    (study,) = [study for study in pacs.get("/studies?expand")
                if study["MainDicomTags"]["StudyInstanceUID"] == study_uid]
    return [pydicom.dcmread(io.BytesIO(requests.get(f"{pacs.rest_url}/instances/{instance}/file",
                                                    auth=(pacs.username, pacs.password), timeout=30).content))
            for series in study["Series"] for instance in pacs.get(f"/series/{series}")["Instances"]]


def instance_uids(pacs, study_uid: str) -> set[str]:
    """The SOP Instance UIDs Orthanc holds for a study."""
    return {dataset.SOPInstanceUID for dataset in study_datasets(pacs, study_uid)}


def study_instances(pacs, study_uid: str) -> list[str]:
    """Modalities of the instances Orthanc holds for a study."""
    return sorted(dataset.Modality for dataset in study_datasets(pacs, study_uid))


def exported_via_api(server, conditions: list[dict]) -> tuple[list[dict], dict]:
    """Generate over the oblique reference and export, through the page's API: (the results, the export answer)."""
    results = []
    for params in conditions:
        answer = requests.post(f"{server.url}/spectgan/api/generate/{MODEL}", params={"image": OBLIQUE},
                               data={"params": json.dumps(params)}, timeout=300)
        assert answer.status_code == 200, answer.text
        results.append(answer.json()["result"])
    exported = requests.post(f"{server.url}/spectgan/api/export", json={"results": [r["result_id"] for r in results]},
                             timeout=300)
    assert exported.status_code == 200, exported.text
    return results, exported.json()


# ---------------------------------------------------------------------------------------------------------- the page

def test_page_requests_two_conditions_shows_statistics_exports_and_opens_ohif(server, pacs, browser, artifacts):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    studies = [option.get_attribute("value") for option in browser.find_elements(By.CSS_SELECTOR, "#study option")]
    assert sorted(studies) == sorted(Identity(number).series_uid for number in range(len(REFERENCES)))
    choose(browser, "study", OBLIQUE)
    choose(browser, "model", MODEL)
    info = requests.get(f"{server.url}/info/", timeout=30).json()["models"][MODEL]
    choose(browser, "level", "CER")  # the page offers only what the model allows: no bilateral at CER
    offered = [option.get_attribute("value") for option in browser.find_elements(By.CSS_SELECTOR, "#pattern option")]
    (patterns,) = [axis for axis in info["axes"] if axis["name"] == "pattern"]  # as the model declares them
    assert offered == patterns["values_per"]["CER"] and "bilateral" not in offered
    choose(browser, "level", "BG")
    choose(browser, "pattern", "unilateral")  # the model declares territory and severity: offered per level
    offered = [option.get_attribute("value") for option in browser.find_elements(By.CSS_SELECTOR, "#territory option")]
    assert offered == ["", *info["params"]["territory"]["per_level"]["BG"]]
    add_condition(browser, "BG", "unilateral", "left", territory="MCA", severity="0.2")
    add_condition(browser, "COR", "normal")
    assert not browser.find_element(By.ID, "territory-box").is_displayed()  # a normal slice has no defect
    assert [item.text.split("\n")[0] for item in browser.find_elements(By.CSS_SELECTOR, "#conditions li")] == \
        ["BG-unilateral-left (MCA 0.2)", "COR-normal"]
    generate(browser, "3", expected=2)

    rows = table_rows(browser)
    assert [row[4:6] for row in rows] == [["BG-unilateral-left", "3"], ["COR-normal", "3"]]
    with SpectGANClient(server.url) as client:  # the same request through /infer gives the same numbers
        direct = [client.generate(OBLIQUE, MODEL, "BG", "unilateral", "left", seed=3, territory="MCA", severity=0.2),
                  client.generate(OBLIQUE, MODEL, "COR", "normal", seed=3)]
    for row, result in zip(rows, direct):
        assert row[6:11] == [f"{getattr(result.stats, key):.{digits}f}" for key, digits in
                             (("mc", 1), ("left", 1), ("right", 1), ("lr", 3), ("ai", 2))]
    cards = browser.find_elements(By.CSS_SELECTOR, ".result")
    assert len(cards) == 2 and all("MC" in card.text and "AI" in card.text for card in cards)
    assert "BG-unilateral-left (MCA 0.2), seed 3" in cards[0].text  # the defect it was asked for, as made
    halves = [canvas_halves(browser, index) for index in range(len(direct))]
    assert all(variance > 100 for variance, _, _ in halves)  # slices, not blank canvases
    # radiological: the patient's left is the screen's right, so the darker half is the lower hemisphere; checked on
    # the left-sided defect (a normal slice, LR near 1, may have either half darker by a hair)
    assert direct[0].stats.lr < 0.97
    assert halves[0][2] < halves[0][1], halves[0]

    browser.save_screenshot(str(artifacts / "page.png"))
    csv_path = artifacts / "spectgan_stats.csv"
    csv_path.unlink(missing_ok=True)
    press_on(browser, "download-csv", "\n")
    wait_for(browser, lambda d: csv_path.is_file() and csv_path.stat().st_size > 0, 30)
    table = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [(row["level"], row["pattern"], row["side"], row["seed"]) for row in table] == \
        [("BG", "unilateral", "left", "3"), ("COR", "normal", "", "3")]
    assert [float(row["mc"]) for row in table] == pytest.approx([result.stats.mc for result in direct], rel=1e-12)

    export_selected(browser)
    assert text_of(browser, "export-status").startswith("Exported 2 results: 6 DICOM instances"), \
        text_of(browser, "error")
    link = browser.find_element(By.CSS_SELECTOR, "a.open-ohif")
    study_uid = link.get_attribute("href").split("StudyInstanceUIDs=")[1]
    assert study_instances(pacs, study_uid) == ["NM", "NM", "SEG", "SEG", "SR", "SR"]
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(artifacts / "page_exported.png"))
    page_window = browser.current_window_handle
    link.click()  # one click opens the study in OHIF, in a new tab
    wait_for(browser, lambda d: len(d.window_handles) == 2)
    browser.switch_to.window([handle for handle in browser.window_handles if handle != page_window][0])
    try:
        wait_for(browser, lambda d: "SYNTHETIC spect_fastgan_A SPECT" in d.execute_script(
            "return document.body.innerText"), OHIF_LOAD_S)
    finally:
        browser.close()
        browser.switch_to.window(page_window)


def test_page_shows_errors_as_readable_messages(server, pacs, browser):
    """Bad seeds (the page), a model the server lacks (404), the PACS down (503, then back) and a generation worker
    that died (503, then replaced)."""
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    choose(browser, "study", OBLIQUE)
    choose(browser, "model", MODEL)
    choose(browser, "level", "BG")
    choose(browser, "pattern", "normal")
    generate_field = browser.find_element(By.ID, "seeds")
    generate_field.clear()
    generate_field.send_keys("2-x\n")  # a bad request, caught by the page
    wait_for(browser, lambda d: "Invalid seeds" in text_of(d, "error"))

    browser.execute_script("const o = document.createElement('option'); o.value = o.textContent = 'no_such_model';"
                           "document.getElementById('model').appendChild(o);")
    choose(browser, "model", "no_such_model")  # a model the server no longer serves: its 404
    generate_field.clear()
    generate_field.send_keys("1\n")
    wait_for(browser, lambda d: "Invalid seeds" not in text_of(d, "error") and text_of(d, "error"), 120)
    assert "HTTP 404" in text_of(browser, "error") and "no_such_model" in text_of(browser, "error"), \
        text_of(browser, "error")

    choose(browser, "model", MODEL)
    choose(browser, "study", OBLIQUE)
    generate(browser, "1", expected=1)
    pacs.stop()  # the PACS is down: the server answers 503 with the reason
    try:
        export_selected(browser)
        message = text_of(browser, "error")
        assert "HTTP 503" in message and "the server is busy or a service it needs is unavailable" in message
        assert "the PACS did not take the export: cannot reach the PACS" in message and "Traceback" not in message
    finally:
        pacs.start()
    from selenium.webdriver.common.keys import Keys

    press_on(browser, "export", Keys.ENTER)  # pressed again when the PACS is back: sent, once
    wait_for(browser, lambda d: text_of(d, "export-status").startswith(("Exported", "Export failed")), 120)
    assert text_of(browser, "export-status").startswith("Exported 1 result: 3 DICOM instances"), \
        text_of(browser, "error")
    assert text_of(browser, "error") == ""

    (worker,) = server.generation_worker_pids()
    os.kill(worker, signal.SIGKILL)  # the server's generation worker dies (killed, out of memory): a 503
    wait_for(browser, lambda d: worker not in server.generation_worker_pids())
    generate_field.clear()
    generate_field.send_keys("2\n")
    wait_for(browser, lambda d: text_of(d, "progress-text").startswith("Stopped"), 240)
    message = text_of(browser, "error")
    assert "HTTP 503" in message and "the generation worker process serving this request ended" in message, message
    generate(browser, "2", expected=1)  # the server replaced its worker: the same request works again


def test_page_makes_a_slice_from_the_patients_own_and_says_what_it_was_derived_from(server, pacs, browser,
                                                                                    artifacts):
    """"Made from" as the model's base param declares it; from the patient's slice (base reference) the page asks
    for the defect's territory and severity before sending, offers the removal of the study's defect with a normal
    pattern (the controls the base param declares) and where to file the export (file_with), and the card names the
    derivation; a result filed with the source lands in the reference's own study."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    choose(browser, "study", OBLIQUE)
    choose(browser, "model", MODEL)
    base = requests.get(f"{server.url}/info/", timeout=30).json()["models"][MODEL]["params"]["base"]
    offered = [option.get_attribute("value") for option in browser.find_elements(By.CSS_SELECTOR, "#base option")]
    assert offered == base["allowed"] == ["model", "reference"]
    assert browser.find_element(By.ID, "base").get_attribute("value") == base["default"]
    assert text_of(browser, "base-hint") == base["description"]
    assert not browser.find_element(By.ID, "file-with-box").is_displayed()  # a new brain: always synthetic
    record_sent_params(browser)
    choose(browser, "base", "reference")
    offered = [option.get_attribute("value") for option in browser.find_elements(By.CSS_SELECTOR, "#file_with option")]
    assert browser.find_element(By.ID, "file-with-box").is_displayed() and offered == ["synthetic", "source"]
    choose(browser, "level", "BG")
    choose(browser, "pattern", "unilateral")
    choose(browser, "side", "left")
    press_on(browser, "seeds", Keys.ENTER)  # territory and severity left to draw: only the model draws
    wait_for(browser, lambda d: text_of(d, "error"))
    assert "Made from reference: BG-unilateral-left needs territory and severity" in text_of(browser, "error")
    assert sent_params(browser) == []

    choose(browser, "territory", "MCA")
    press_on(browser, "severity", Keys.CONTROL, "a", Keys.NULL, "0.3")
    generate(browser, "1", expected=1)
    assert sent_params(browser) == [{"level": "BG", "pattern": "unilateral", "side": "left", "territory": "MCA",
                                     "severity": "0.3", "seed": 1, "base": "reference"}]
    (card,) = browser.find_elements(By.CSS_SELECTOR, ".result")
    assert "Made from the reference patient's own slice with the defect left MCA 30% added (physics method)." \
        in card.find_element(By.CSS_SELECTOR, ".derivation").text

    # removing the study's defect (pattern normal): the controls the base param declares under "removes"
    removes = base["removes"]
    assert not browser.find_element(By.ID, "removal-box").is_displayed()
    choose(browser, "pattern", "normal")
    assert browser.find_element(By.ID, "removal-box").is_displayed()
    assert not browser.find_element(By.ID, "territory-box").is_displayed()
    sides = browser.find_elements(By.CSS_SELECTOR, "#remove-side option")
    assert [(o.get_attribute("value"), o.text) for o in sides] == [("", "both sides"), ("left", "left"),
                                                                   ("right", "right")]
    offered = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#remove-territory option")]
    assert offered == removes["params"]["territory"]["per_level"]["BG"]
    assert browser.find_element(By.ID, "remove-severity").get_attribute("placeholder") == "0.15-0.5"
    press_on(browser, "seeds", Keys.ENTER)  # no severity yet: the page asks for it before sending
    wait_for(browser, lambda d: "needs the severity of the defect to remove" in text_of(d, "error"))
    assert len(sent_params(browser)) == 1
    choose(browser, "remove-side", "left")
    choose(browser, "remove-territory", "MCA")
    press_on(browser, "remove-severity", Keys.CONTROL, "a", Keys.NULL, "0.3")
    choose(browser, "file_with", "source")
    generate(browser, "1", expected=1)
    assert sent_params(browser)[-1] == {"level": "BG", "pattern": "normal", "side": "left", "territory": "MCA",
                                        "severity": "0.3", "seed": 1, "base": "reference", "file_with": "source"}
    added, removed = browser.find_elements(By.CSS_SELECTOR, ".result")
    assert "Made from the reference patient's own slice with the defect left MCA 30% removed (physics method)." \
        in removed.find_element(By.CSS_SELECTOR, ".derivation").text
    # the study's own left MCA defect (27 %) taken away: its slice, unchanged, reads AI -9.8 %
    ai = [float(row[10]) for row in table_rows(browser)]
    assert ai[0] < -15 and ai[1] > -3, ai
    browser.execute_script("window.scrollTo(0, 0)")
    browser.set_window_size(WINDOW[0], 1000)  # the request panel down to the defect to remove
    browser.save_screenshot(str(artifacts / "page_removal.png"))
    browser.set_window_size(*WINDOW)
    before = instance_uids(pacs, Identity(1).study_uid)
    export_selected(browser)  # the added defect to a synthetic study, the removal to the reference's own study
    exported = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#exported li")]
    assert exported[-2].startswith("Synthetic study SYN") and \
        exported[-1].startswith("Filed with the source study over "), exported
    assert sorted(ds.Modality for ds in study_datasets(pacs, Identity(1).study_uid)
                  if ds.SOPInstanceUID not in before) == ["NM", "SEG", "SR"]


def test_page_and_api_refuse_what_the_server_does_not_allow(server):
    url = f"{server.url}/spectgan/api"
    bilateral_cer = requests.post(f"{url}/generate/{MODEL}", params={"image": OBLIQUE},
                                  data={"params": json.dumps({"level": "CER", "pattern": "bilateral"})}, timeout=60)
    assert bilateral_cer.status_code == 422 and "does not exist at level CER" in bilateral_cer.json()["detail"]
    for body, status, words in (({"results": []}, 422, "non-empty list"), ({"results": ["gone"]}, 404, "no longer"),
                                ("not json", 400, "not JSON")):
        sent = {"data": body} if isinstance(body, str) else {"json": body}
        answer = requests.post(f"{url}/export", timeout=60, **sent)
        assert answer.status_code == status and words in answer.json()["detail"], answer.text
    view = requests.post(f"{url}/generate/{MODEL}", params={"image": OBLIQUE},
                         data={"params": json.dumps({"level": "BG", "pattern": "normal", "seed": 0})},
                         timeout=300).json()["view"]
    assert view["marks"] == {"left": "R", "right": "L", "top": "A", "bottom": "P"}  # radiological
    page = requests.get(f"{server.url}/spectgan/", timeout=30)
    assert page.status_code == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http" not in "".join(line for line in page.text.splitlines() if "src=" in line or "href=" in line
                                 if "/ohif/" not in line)  # nothing loaded from elsewhere


def test_a_slice_from_the_reference_names_its_source_instances_and_is_filed_where_asked(server, pacs):
    """base=reference over a PACS series: the NM stored in Orthanc carries a Source Image Sequence naming the
    reference's instance; by default it is filed under a synthetic patient with none of the reference's identifiers
    (in the PACS, in the answers, in the log); file_with=source files it as new series of the reference's own study,
    under its patient, still marked synthetic; file_with=source of a new brain is a 422 naming why."""
    identity = Identity(1)  # the reference: one NM multi-frame instance
    added = {"level": "BG", "pattern": "unilateral", "side": "left", "territory": "MCA", "severity": "0.3",
             "seed": 1, "base": "reference"}
    (result,), exported = exported_via_api(server, [added])
    assert result["derivation"]["source"]["series_instance_uid"] == identity.series_uid
    assert result["derivation"]["source"]["instances"] == [["1.2.840.10008.5.1.4.1.1.20", identity.sop_uid(0)]]
    assert result["derivation"]["file_with"] == "synthetic" and "filed_with" not in result["derivation"]
    (study,) = exported["studies"]
    assert study["study_instance_uid"] != identity.study_uid and study["patient_id"].startswith("SYN")
    datasets = study_datasets(pacs, study["study_instance_uid"])
    assert sorted(ds.Modality for ds in datasets) == ["NM", "SEG", "SR"]
    (nm,) = [ds for ds in datasets if ds.Modality == "NM"]
    assert [(item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) for item in nm.SourceImageSequence] == \
        [("1.2.840.10008.5.1.4.1.1.20", identity.sop_uid(0))]
    assert nm.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    secret = [identity.patient_name, identity.patient_id, identity.birth_date, identity.accession_number]
    stored = "".join(str(ds) for ds in datasets)  # the reference's UIDs only in the Source Image Sequence
    assert not [value for value in secret + [identity.study_uid, identity.frame_of_reference_uid] if value in stored]
    told = json.dumps([result, exported]) + server.log_tail(10 ** 7)  # the UIDs, as the datastore lists them
    assert not [value for value in secret if value in told]

    before = instance_uids(pacs, identity.study_uid)
    (result,), exported = exported_via_api(server, [{**added, "file_with": "source"}])
    assert result["derivation"]["file_with"] == "source"
    (study,) = exported["studies"]
    assert study["study_instance_uid"] == identity.study_uid and "patient_id" not in study
    filed = [ds for ds in study_datasets(pacs, identity.study_uid) if ds.SOPInstanceUID not in before]
    assert sorted(ds.Modality for ds in filed) == ["NM", "SEG", "SR"]
    for ds in filed:
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber) == \
            (identity.patient_name, identity.patient_id, identity.birth_date, identity.accession_number)
        assert ds[SYNTHETIC_DATA_TAG].value == "YES" and ds.SeriesDescription.startswith("SYNTHETIC")
        assert ds.ContentQualification == "RESEARCH" and ds.PatientIdentityRemoved == "NO"
    (nm,) = [ds for ds in filed if ds.Modality == "NM"]
    assert nm.SourceImageSequence[0].ReferencedSOPInstanceUID == identity.sop_uid(0)
    assert nm.FrameOfReferenceUID == identity.frame_of_reference_uid and "file_with source" in \
        nm.DerivationDescription
    assert identity.patient_name not in server.log_tail(10 ** 7)

    from_model = requests.post(f"{server.url}/spectgan/api/generate/{MODEL}", params={"image": OBLIQUE},
                               data={"params": json.dumps({"level": "BG", "pattern": "normal", "file_with": "source"})},
                               timeout=60)
    assert from_model.status_code == 422 and "needs base reference" in from_model.json()["detail"]


# ------------------------------------------------------------------------------------------------------------- OHIF

def open_ohif(browser, server, study_uid: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/ohif/viewer?StudyInstanceUIDs={study_uid}")
    wait_for(browser, lambda d: "SYNTHETIC spect_fastgan_A SPECT" in d.execute_script(
        "return document.body.innerText") and d.find_elements(By.CSS_SELECTOR, ".cornerstone-canvas"), OHIF_LOAD_S)
    for button in browser.find_elements(By.XPATH, "//button[contains(., 'Confirm and Hide')]"):
        button.click()  # OHIF's "investigational use" banner
    wait_for_steady_viewport(browser)  # OHIF renders after the page has loaded; the tests assert on pixels


def viewport_pixels(browser) -> np.ndarray:
    """The viewport as the screen shows it: an RGB array from a screenshot of its element."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    element = browser.find_element(By.CSS_SELECTOR, "[data-cy='viewport-pane']")
    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")).astype(np.int16)


def wait_for_steady_viewport(browser) -> None:
    """Wait until the viewport shows an image (not one grey level) that two screenshots in a row agree on."""
    shots = [viewport_pixels(browser)]

    def steady(driver) -> bool:
        shots[:] = [shots[-1], viewport_pixels(driver)]
        return np.array_equal(*shots) and shots[1].std() > 0
    wait_for(browser, steady, OHIF_LOAD_S)


def warning_messages(browser) -> list[str]:
    """The display-set messages behind each warning icon of the study panel (hovered, as a person would)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    icons = browser.find_elements(By.XPATH, "//*[local-name()='svg'][.//*[@fill='#FFD22A']]/ancestor::button[1]")
    messages = []
    for icon in icons:
        ActionChains(browser).move_to_element(icon).perform()
        wait_for(browser, lambda d: "Display Set Messages" in d.execute_script("return document.body.innerText"))
        text = browser.execute_script("return document.body.innerText")
        messages.append(sorted({line.split(". ", 1)[1] for line in text.splitlines()
                                if line[:1].isdigit() and ". Display set" in line}))
        ActionChains(browser).move_by_offset(400, 0).perform()
    return messages


def double_click_thumbnail(browser, modality: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    (thumbnail,) = [thumbnail for thumbnail in browser.find_elements(
        By.CSS_SELECTOR, "[data-cy^='study-browser-thumbnail']") if thumbnail.text.startswith(modality)]
    ActionChains(browser).double_click(thumbnail).perform()


def test_ohif_shows_the_exported_slice_oriented_with_its_segments_and_measurements(server, browser, artifacts):
    from selenium.webdriver.common.by import By

    (result,), exported = exported_via_api(server, [{"level": "BG", "pattern": "unilateral", "side": "left",
                                                     "seed": 5}])
    open_ohif(browser, server, exported["studies"][0]["study_instance_uid"])
    grey = viewport_pixels(browser)
    assert grey.std() > 5 and (grey.max(axis=(0, 1)) > 150).all()  # an image, not a blank viewport
    # orientation marks of the registered (slightly oblique) plane: anterior up, the patient's right on the left
    marks = {position: browser.find_element(By.CSS_SELECTOR, f".orientation-marker.{position}").text
             for position in ("top-mid", "left-mid")}
    assert marks["top-mid"].startswith("A") and marks["left-mid"].startswith("R"), marks
    # the one message OHIF gives any one-slice series (see README, OHIF limits); position is no longer missing
    assert warning_messages(browser) == [["Display set is not a reconstructable 3D volume."]]
    browser.save_screenshot(str(artifacts / "ohif_nm.png"))

    double_click_thumbnail(browser, "SEG")
    wait_for(browser, lambda d: d.execute_script(  # "Do you want to open this Segmentation?" Yes
        "const yes = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Yes');"
        "if (yes) yes.click(); return Boolean(yes);"), 60)

    def coloured(pixels: np.ndarray) -> tuple[int, int]:
        """Pixels of the left segment's orange and the right segment's blue, by screen half (left, right)."""
        red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        orange = (red > green + 40) & (green > blue + 20)
        bluish = (blue > red + 40)
        middle = pixels.shape[1] // 2
        return (int(orange[:, middle:].sum() - orange[:, :middle].sum()),
                int(bluish[:, :middle].sum() - bluish[:, middle:].sum()))

    wait_for(browser, lambda d: min(coloured(viewport_pixels(d))) > 500, OHIF_LOAD_S)
    browser.save_screenshot(str(artifacts / "ohif_synthetic_study.png"))

    # the SR: the outlines of the brain and of each hemisphere, labelled with their measurements
    double_click_thumbnail(browser, "SR")
    wait_for(browser, lambda d: "Hemisphere asymmetry index" in d.execute_script("return document.body.innerText"),
             OHIF_LOAD_S)
    text = browser.execute_script("return document.body.innerText")
    stats = result["stats"]
    for shown in (f"Hemisphere asymmetry index: {stats['ai']:.2f} %",
                  f"Left to right hemisphere mean count ratio: {stats['lr']:.2f}",
                  f"Nuclear Medicine Tomographic Activity: {stats['left']:.2f}",
                  f"Nuclear Medicine Tomographic Activity: {stats['right']:.2f}"):
        assert shown in text, shown
    wait_for_steady_viewport(browser)
    browser.save_screenshot(str(artifacts / "ohif_sr.png"))
