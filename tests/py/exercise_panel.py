"""Drives the dashboard's Exercise panel in headless Chromium (selenium): the current task is
open, "Show a hint" reveals the task's first hint, and "Start this task over" (confirmed) restores
the lab as the task began and says so.

Environment: DASH (the dashboard's sign-in URL, with the lab token), TASK (the current task's id),
ARTIFACTS (directory for screenshots). Prints one JSON object of findings on stdout.
"""

import json
import os
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ART = os.environ["ARTIFACTS"]
TASK = os.environ["TASK"]
os.makedirs(ART, exist_ok=True)


def wait(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the panel re-renders when progress changes
            last = e
        time.sleep(0.05)
    driver.save_screenshot(os.path.join(ART, "exercise-timeout.png"))
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def task_li():
    return driver.find_element(By.CSS_SELECTOR, f'#ex-tasks li[data-task="{TASK}"]')


def click_in_task(css):
    def clicked():
        try:
            b = task_li().find_elements(By.CSS_SELECTOR, css)
            if b and b[0].is_displayed() and b[0].is_enabled():
                b[0].click()
                return True
        except StaleElementReferenceException:
            pass
        return False
    wait(f"{css} in task {TASK}", clicked)


opts = Options()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
          "--window-size=1600,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='fortilab-chrome-')}"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
driver.set_page_load_timeout(30)
out = {}
try:
    driver.get(os.environ["DASH"])
    wait("the Exercise panel", lambda: driver.find_element(By.ID, "exercise-card").is_displayed())
    out["badge"] = wait("the progress badge", lambda: driver.find_element(By.ID, "ex-count").text)
    wait(f"task {TASK} current", lambda: task_li().get_attribute("data-state") == "current")
    hints_before = len(task_li().find_elements(By.CSS_SELECTOR, ".hint"))
    click_in_task("button[data-hint]")
    wait("the hint shown", lambda: len(task_li().find_elements(By.CSS_SELECTOR, ".hint")) > hints_before)
    out["hint"] = task_li().find_elements(By.CSS_SELECTOR, ".hint")[-1].text
    driver.save_screenshot(os.path.join(ART, "exercise-hint.png"))
    click_in_task("button[data-restart]")
    wait("the confirmation", lambda: driver.switch_to.alert)
    driver.switch_to.alert.accept()
    out["toast"] = wait("the started-over message", lambda: next(
        (t.text for t in driver.find_elements(By.CSS_SELECTOR, "#toast .t") if "started over" in t.text), None),
        60)
    driver.save_screenshot(os.path.join(ART, "exercise-restarted.png"))
finally:
    driver.quit()
print(json.dumps(out))
