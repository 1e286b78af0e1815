"""The browser workstation on a server with an API token, in a real headless Chromium against a real server whose
datastore and PACS is a real Orthanc: the page asks for the token once, the server answers a session cookie that
authorises the page's calls and OHIF's DICOMweb calls through its proxy, a wrong token gets a clear message, and the
token appears in no URL, answer or log line.
"""
from __future__ import annotations

import secrets

import pytest
import requests
from dicom_builders import Identity
from test_reader_study import text_of, wait_for
from test_workstation_page import (MODEL, OBLIQUE, OHIF_LOAD_S, REFERENCES, artifacts, browser, choose,  # noqa: F401
                                   generate, open_page, pacs, workstation_server)

SESSION_COOKIE = "spectgan_session"
REFUSED = ("/info/", "/spectgan/api/studies", "/spectgan/api/config", "/datastore/?output=all",
           "/proxy/dicom/qido/studies")


@pytest.fixture(scope="module")
def secured(pacs, tmp_path_factory):  # noqa: F811
    """The workstation's server with an API token (``server.token``)."""
    token = secrets.token_urlsafe(24)
    with workstation_server(pacs, tmp_path_factory.mktemp("secured_workstation"), token=token) as process:
        process.token = token
        yield process


def urls_seen(browser) -> list[str]:  # noqa: F811
    """Every URL the current tab has loaded: its address, its navigations and its resources (scripts, fetches)."""
    return [browser.current_url, *browser.execute_script("return performance.getEntries().map(e => e.name)")]


def log_in(browser, token: str) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    wait_for(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), 30)
    browser.find_element(By.ID, "token").send_keys(token, Keys.ENTER)


def test_without_a_login_nothing_answers_and_the_page_shows_the_login(secured, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    for path in REFUSED:
        answer = requests.get(f"{secured.url}{path}", timeout=30)
        assert answer.status_code == 401, (path, answer.text)
    ohif = requests.get(f"{secured.url}/ohif/viewer", params={"StudyInstanceUIDs": "1.2.3"},
                        headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert ohif.status_code == 303  # a browser opening OHIF is sent to the login, which sends it back
    assert ohif.headers["Location"] == "/spectgan/?next=%2Fohif%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"
    assert requests.get(f"{secured.url}/spectgan/api/session", timeout=30).json() == \
        {"token_required": True, "logged_in": False}

    browser.delete_all_cookies()
    browser.get(f"{secured.url}/spectgan/")
    wait_for(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), 30)
    assert not browser.find_element(By.ID, "workspace").is_displayed()
    assert text_of(browser, "error") == ""

    log_in(browser, "not-" + secured.token)
    wait_for(browser, lambda d: text_of(d, "login-error"), 30)
    assert "not this server's API token" in text_of(browser, "login-error")
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""  # the page keeps no token
    assert browser.get_cookie(SESSION_COOKIE) is None and not browser.find_element(By.ID, "workspace").is_displayed()


def test_after_the_login_the_page_generates_and_ohif_reads_the_pacs_then_logout_ends_it(secured, browser):  # noqa: F811,E501
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(f"{secured.url}/spectgan/")
    log_in(browser, secured.token)
    wait_for(browser, lambda d: d.find_element(By.ID, "generate").is_enabled(), 60)
    assert text_of(browser, "error") == "" and not browser.find_element(By.ID, "login").is_displayed()
    cookie = browser.get_cookie(SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/" and cookie["expiry"] > 0 and secured.token not in cookie["value"]
    choose(browser, "study", OBLIQUE)
    choose(browser, "model", MODEL)
    choose(browser, "level", "BG")
    choose(browser, "pattern", "normal")
    generate(browser, "1", expected=1)
    seen = urls_seen(browser)

    browser.get(f"{secured.url}/ohif/")  # the study list, through MONAI Label's DICOMweb proxy
    wait_for(browser, lambda d: all(Identity(number).patient_id in d.execute_script("return document.body.innerText")
                                    for number in range(len(REFERENCES))), OHIF_LOAD_S)
    seen += urls_seen(browser)
    browser.get(f"{secured.url}/ohif/viewer?StudyInstanceUIDs={Identity(1).study_uid}")  # its series, drawn
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".cornerstone-canvas") and [
        thumbnail for thumbnail in d.find_elements(By.CSS_SELECTOR, "[data-cy^='study-browser-thumbnail']")
        if thumbnail.text.startswith("NM")], OHIF_LOAD_S)
    seen += urls_seen(browser)
    assert any("/proxy/dicom/" in url for url in seen) and not any(secured.token in url for url in seen)

    browser.get(f"{secured.url}/spectgan/")
    wait_for(browser, lambda d: d.find_element(By.ID, "logout").is_displayed(), 60)
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), 30)
    assert "Logged out" in text_of(browser, "login-error") and browser.get_cookie(SESSION_COOKIE) is None
    refused = requests.get(f"{secured.url}/info/", cookies={SESSION_COOKIE: cookie["value"]}, timeout=30)
    assert refused.status_code == 401 and "session has expired or was ended" in refused.json()["detail"]

    log_in(browser, secured.token)  # the same page again: its table keeps one column per declared statistic
    wait_for(browser, lambda d: d.find_element(By.ID, "generate").is_enabled(), 60)
    config = requests.get(f"{secured.url}/spectgan/api/config", timeout=30,
                          headers={"Authorization": f"Bearer {secured.token}"}).json()
    expected = sum(statistic["summary"] for statistic in config["statistics"])
    # read in one script: the page may rebuild the head after it enables the button, which makes held elements stale
    count = "return document.querySelectorAll('#stats-head th.statistic').length"
    wait_for(browser, lambda d: d.execute_script(count) >= expected, 30)
    assert browser.execute_script(count) == expected > 0
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), 30)

    viewer = f"/ohif/viewer?StudyInstanceUIDs={Identity(0).study_uid}"
    browser.get(f"{secured.url}{viewer}")  # OHIF without a session: the login, then back to OHIF
    log_in(browser, secured.token)
    wait_for(browser, lambda d: d.current_url == f"{secured.url}{viewer}", 30)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".cornerstone-canvas"), OHIF_LOAD_S)
    assert secured.token not in secured.log_path.read_text(errors="replace")
