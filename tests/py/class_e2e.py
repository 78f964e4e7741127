"""Renders the fortilab class instructor page in headless Chromium (selenium) and checks that it
lists every lab with a link to its dashboard and its trainee page and each lab's exercise progress;
then the first trainee fixes her lab through the FortiGate's REST API and browses, and the open
instructor page ticks her task without a reload; then it opens her trainee page and checks it
shows the lab's FortiGate credentials and the exercise's tasks.

Environment: CLASS (the class report `fortilab class up --ready-file` wrote), ARTIFACTS
(directory for screenshots). Prints one JSON object of findings on stdout.
"""

import json
import os
import sys
import tempfile
import time

import requests

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CLASS = json.load(open(os.environ["CLASS"]))
ART = os.environ["ARTIFACTS"]
os.makedirs(ART, exist_ok=True)


def wait(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the page may be re-rendering
            last = e
        time.sleep(0.1)
    driver.save_screenshot(os.path.join(ART, "timeout.png"))
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


opts = Options()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
          "--window-size=1600,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='fortilab-chrome-')}"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
driver.set_page_load_timeout(30)
out = {}
try:
    n = len(CLASS["labs"])
    driver.get(CLASS["instructor"]["sign_in"])
    # The sign-in link sets the cookie and drops the token from the address bar.
    wait("the token to leave the URL", lambda: "token=" not in driver.current_url)
    rows = wait(f"{n} ready labs", lambda: (lambda r: r if len(r) == n and all(
        x.find_element(By.CSS_SELECTOR, ".status span").text == "ready" for x in r) else None)(
        driver.find_elements(By.CSS_SELECTOR, "#labs tbody tr.lab")))
    labs = []
    for r in rows:
        dash = r.find_element(By.CSS_SELECTOR, "a.dashboard").get_attribute("href")
        page = r.find_element(By.CSS_SELECTOR, "a.trainee-page").get_attribute("href")
        labs.append({"index": r.get_attribute("data-index"),
                     "trainee": r.find_element(By.CSS_SELECTOR, ".trainee").text,
                     "dashboard": dash, "trainee_page": page})
        assert dash.startswith("http://127.0.0.1:"), dash
    out["instructor_rows"] = labs

    def progress_text(index):
        row = driver.find_element(By.CSS_SELECTOR, f'#labs tbody tr.lab[data-index="{index}"]')
        return row.find_element(By.CSS_SELECTOR, ".progress").text

    out["progress_before"] = {str(i + 1): progress_text(i + 1) for i in range(n)}
    driver.save_screenshot(os.path.join(ART, "01-instructor.png"))

    # The first trainee fixes her lab (FortiAnalyzer logging back on) through the FortiGate's
    # REST API and browses; the instructor page, left open, ticks her first task.
    t = CLASS["labs"][0]
    me = requests.get(t["url"] + "api/me", headers={"X-Fortilab-Token": t["token"]}, timeout=10).json()
    ca = me["ca_cert"]  # the lab CA's certificate file
    fgt = me["fortigate"]
    ctrl = me["endpoints"][0]["control"]

    def fixed():
        r = requests.put(fgt["rest"] + "/api/v2/cmdb/log.fortianalyzer/setting", json={"status": "enable"},
                         headers={"Authorization": "Bearer " + fgt["api_token"]}, verify=ca, timeout=10)
        return r.status_code == 200
    wait("the trainee's fix", fixed)

    def ticked():
        try:  # browse until FortiAnalyzer has a log (the lab may be saving a task's snapshot)
            requests.post(ctrl + "/_lab/fetch", json={"url": "http://news.sky.com/"},
                          headers={"X-Fortilab-Token": me["lab_token"]}, verify=ca, timeout=10)
        except requests.RequestException:
            pass
        return progress_text(1).startswith("1/")
    wait("the instructor page to tick the trainee's task", ticked, 60)
    out["progress_after"] = progress_text(1)
    driver.save_screenshot(os.path.join(ART, "01b-instructor-progress.png"))
    # The instructor's cookie does not open a trainee page (another listener, another token).
    t = CLASS["labs"][0]
    driver.get(t["url"])
    out["trainee_without_token"] = driver.find_element(By.TAG_NAME, "body").text[:80]
    driver.get(t["sign_in"])
    wait("the trainee's FortiGate credentials",
         lambda: "API token" in driver.find_element(By.CSS_SELECTOR, "#creds").text
         and "-" != driver.find_element(By.CSS_SELECTOR, "#creds tbody tr td:nth-child(3)").text)
    out["trainee_heading"] = driver.find_element(By.TAG_NAME, "h1").text
    wait("the exercise's tasks on the trainee page",
         lambda: len(driver.find_elements(By.CSS_SELECTOR, "#progress .tasks li")) > 0)
    out["trainee_progress"] = driver.find_element(By.CSS_SELECTOR, "#progress").text
    out["trainee_tasks_done"] = len(driver.find_elements(By.CSS_SELECTOR, "#progress .tasks li.done"))
    driver.save_screenshot(os.path.join(ART, "02-trainee.png"))
finally:
    driver.quit()
print(json.dumps(out))
