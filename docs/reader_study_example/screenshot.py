"""The README's picture of the reading page: headless Chromium (Debian's, driven by Selenium with explicit paths, so
nothing is downloaded) opens the first reader's link, answers the practice block by keyboard, then keys 2 and 4 on the
first study case.

    python docs/reader_study_example/screenshot.py http://127.0.0.1:8765 STUDY/readers.csv docs/reader_study_page.png 4
"""
from __future__ import annotations

import csv
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys


def main(base: str, readers_csv: str, out: str, practice: int) -> None:
    with open(readers_csv, newline="") as stream:
        url = next(csv.DictReader(stream))["url"]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1180,660", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.get(base + url)
        time.sleep(3)
        for _ in range(practice):  # answer, read the feedback, continue
            ActionChains(driver).send_keys("1", "3", Keys.ENTER).perform()
            time.sleep(1.5)
            ActionChains(driver).send_keys(Keys.ENTER).perform()
            time.sleep(1.5)
        ActionChains(driver).send_keys("2", "4").perform()
        time.sleep(1)
        driver.save_screenshot(out)
    finally:
        driver.quit()


if __name__ == "__main__":
    main(*sys.argv[1:4], int(sys.argv[4]))
