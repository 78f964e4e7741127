"""Drives the dashboard's snapshot buttons in headless Chromium (selenium) against a running lab.

A FortiGate address is made through FortiOS REST; a snapshot is saved under a typed name with the
dashboard's Save button (the list offers it afterwards); the address is deleted through REST; the
Restore button brings the lab back to the snapshot and the address is there again (checked through
REST, not through the dashboard).

Environment: READY (the ready file of `fortilab up`), ARTIFACTS (directory for screenshots),
REQUESTS_CA_BUNDLE (the lab CA). Prints one JSON object of findings on stdout.
"""

import json
import os
import tempfile
import time

import requests
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

READY = json.load(open(os.environ["READY"]))
ART = os.environ["ARTIFACTS"]
CA = READY["ca_cert"]
FGT = READY["fortigate"]
NAME = "browser-snap"
OBJ = "snap-browser-obj"
os.makedirs(ART, exist_ok=True)
S = requests.Session()
S.headers["Authorization"] = "Bearer " + FGT["api_token"]
ADDR = FGT["api"] + "/api/v2/cmdb/firewall/address"


def wait(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the page may be re-rendering, the lab restarting
            last = e
        time.sleep(0.05)
    driver.save_screenshot(os.path.join(ART, "snapshots-timeout.png"))
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def obj_status():
    return S.get(ADDR + "/" + OBJ, verify=CA, timeout=10).status_code


def toast(words):
    return next((t.text for t in driver.find_elements(By.CSS_SELECTOR, "#toast .t")
                 if all(w in t.text for w in words)), None)


def outcome(words):
    """The message of a finished button: the toast with `words`, or an error toast."""
    t = toast(words)
    if t:
        return t
    bad = next((t.text for t in driver.find_elements(By.CSS_SELECTOR, "#toast .t.bad")), None)
    return bad and "ERROR: " + bad


r = S.post(ADDR, json={"name": OBJ, "subnet": "192.0.2.77 255.255.255.255"}, verify=CA, timeout=10)
r.raise_for_status()
assert obj_status() == 200

opts = Options()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
          "--window-size=1600,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='fortilab-chrome-')}"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
driver.set_page_load_timeout(30)
out = {}
try:
    driver.get(READY["dashboard"] + "?token=" + READY["lab_token"])
    name = wait("the snapshot name field", lambda: driver.find_element(By.ID, "snap-name"))
    name.clear()
    name.send_keys(NAME)
    driver.find_element(By.ID, "btn-snap-save").click()
    out["saved_toast"] = wait("the saved message", lambda: outcome([NAME, "saved"]), 60)
    assert not out["saved_toast"].startswith("ERROR"), out["saved_toast"]
    out["listed"] = wait("the snapshot in the list", lambda: [
        o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#snap-list option")
        if o.get_attribute("value") == NAME])
    driver.save_screenshot(os.path.join(ART, "snapshots-saved.png"))

    # A change after the snapshot: the address deleted through FortiOS REST.
    r = S.delete(ADDR + "/" + OBJ, verify=CA, timeout=10)
    r.raise_for_status()
    out["deleted_status"] = obj_status()

    # Restore from the button (the name is still in the field).
    driver.find_element(By.ID, "btn-snap-restore").click()
    out["restored_toast"] = wait("the restored message", lambda: outcome([NAME, "restored"]), 60)
    assert not out["restored_toast"].startswith("ERROR"), out["restored_toast"]
    out["restored_status"] = wait("the address back", lambda: obj_status() == 200 and 200, 30)
    driver.save_screenshot(os.path.join(ART, "snapshots-restored.png"))
finally:
    driver.quit()
print(json.dumps(out))
