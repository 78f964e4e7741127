"""A trainee plays the seed exercise (seed-ioc-stitch) inside a class, in headless Chromium
(selenium): two browsers, the instructor page and lab 1's trainee page, stay open the whole time.

From the trainee page the script reads what a trainee reads there (the FortiGate's REST URL and
API token, its SSH console and admin password, FortiAnalyzer's JSON-RPC URL and API token, EMS's
REST URL and admin, the lab token, PC-52's lab control, the lab CA from the page's own link) and
does every task through those interfaces: the FortiGate SSH console (paramiko), FortiOS REST,
FortiAnalyzer JSON-RPC, EMS REST and the endpoint. On the trainee page it reveals a hint and
starts a task over (button, confirmation); after each task it waits until the trainee page ticks
it and the open instructor page shows the new count, without a reload.

Environment: CLASS (the class report `fortilab class up --ready-file` wrote), ARTIFACTS
(directory for screenshots). Prints one JSON object of findings on stdout.
"""

import json
import os
import tempfile
import time

import paramiko
import requests

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CLASS = json.load(open(os.environ["CLASS"]))
ART = os.environ["ARTIFACTS"]
os.makedirs(ART, exist_ok=True)
TOTAL = 11
DRIVERS = []


def shoot(name):
    for i, d in enumerate(DRIVERS):
        try:
            d.save_screenshot(os.path.join(ART, f"seed-{name}-{i}.png"))
        except Exception:
            pass


def wait(what, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # pages re-render; devices restart while a snapshot is taken
            last = e
        time.sleep(0.05)
    shoot("timeout")
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def browser():
    opts = Options()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run",
              "--disable-dev-shm-usage", "--window-size=1400,1600",
              f"--user-data-dir={tempfile.mkdtemp(prefix='fortilab-chrome-')}"]:
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    d.set_page_load_timeout(30)
    DRIVERS.append(d)
    return d


out = {"instructor_counts": [], "latency_ms": {}}
try:
    inst = browser()
    tr = browser()
    lab = CLASS["labs"][0]

    # The instructor page: both labs ready, 0 of the exercise's 11 tasks done.
    inst.get(CLASS["instructor"]["sign_in"])

    def inst_progress(index):
        row = inst.find_element(By.CSS_SELECTOR, f'#labs tbody tr.lab[data-index="{index}"]')
        return row.find_element(By.CSS_SELECTOR, ".progress").text

    out["instructor_before"] = wait("both labs at 0/11 on the instructor page", lambda: (
        lambda a, b: [a, b] if a.startswith(f"0/{TOTAL}") and b.startswith(f"0/{TOTAL}") else None)(
        inst_progress(1), inst_progress(2)))

    # The trainee page: the lab's credentials and consoles.
    tr.get(lab["sign_in"])
    wait("the token to leave the URL", lambda: "token=" not in tr.current_url)

    def cell(row, n):
        return tr.find_element(By.CSS_SELECTOR, f'#creds tr[data-row="{row}"] td:nth-child({n})').text

    wait("the trainee's credentials", lambda: cell("fgt-rest", 4).startswith("API token ")
         and cell("fgt-rest", 4) != "API token -" and cell("ems-rest", 3) != "-")
    fgt_rest = cell("fgt-rest", 3).rstrip("/")
    fgt_token = cell("fgt-rest", 4).removeprefix("API token ")
    ssh_cmd = cell("fgt-ssh", 3)  # ssh -p PORT admin@127.0.0.1
    ssh_port = int(ssh_cmd.split()[2])
    ssh_user, ssh_host = ssh_cmd.split()[3].split("@")
    fgt_password = cell("fgt-ssh", 4).split(" / ", 1)[1]
    faz_rpc = cell("faz-rpc", 3)
    faz_token = cell("faz-rpc", 4).removeprefix("API token ")
    ems_rest = cell("ems-rest", 3).rstrip("/") + "/"
    ems_user, ems_password = cell("ems-rest", 4).split(" / ", 1)
    lab_token = cell("lab-token", 4)
    pc52 = wait("PC-52's lab control", lambda: tr.find_element(
        By.CSS_SELECTOR, '#endpoints tr[data-endpoint="PC-52"] td:nth-child(3)').text)
    out["trainee_heading"] = tr.find_element(By.TAG_NAME, "h1").text
    # The lab CA from the page's own link, with the page's session cookie.
    cookies = {c["name"]: c["value"] for c in tr.get_cookies()}
    r = requests.get(lab["url"] + "ca.pem", cookies=cookies, timeout=10)
    assert r.status_code == 200 and "BEGIN CERTIFICATE" in r.text, r.status_code
    ca = os.path.join(tempfile.mkdtemp(prefix="fortilab-ca-"), "ca.pem")
    with open(ca, "w") as f:
        f.write(r.text)

    def fgt(method, path, body=None):
        r = requests.request(method, fgt_rest + path, json=body, verify=ca, timeout=20,
                             headers={"Authorization": "Bearer " + fgt_token})
        return r.status_code, r.json() if r.content else None

    def rpc(method, url, params):
        p = {"url": url, "apiver": 3, **params}
        r = requests.post(faz_rpc, json={"id": 1, "jsonrpc": "2.0", "method": method, "params": [p]},
                          headers={"Authorization": "Bearer " + faz_token}, verify=ca, timeout=20)
        v = r.json()
        assert "error" not in v, v
        res = v.get("result")
        res = res[0] if isinstance(res, list) else res
        code = ((res or {}).get("status") or {}).get("code", 0)
        assert code == 0, v
        return res

    ems = requests.Session()
    ems_base = ems_rest.removesuffix("api/v1/").rstrip("/")

    def ems_call(method, path, body=None):
        if "csrftoken" not in ems.cookies:
            r = ems.post(ems_rest + "auth/signin", json={"name": ems_user, "password": ems_password},
                         verify=ca, timeout=20)
            assert r.status_code == 200, r.text
        # (verify per request: a session's verify loses to REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE)
        r = ems.request(method, ems_rest + path, json=body, verify=ca, timeout=20, headers={
            "Referer": ems_base, "X-CSRFToken": ems.cookies.get("csrftoken", ""), "Ems-Call-Type": "2"})
        if r.status_code == 401:
            ems.cookies.clear()
            raise RuntimeError(f"EMS {method} {path}: 401")
        v = r.json()
        assert r.status_code == 200 and v["result"]["retval"] == 1, (r.status_code, v)
        return v

    def console(lines):
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        c.connect(ssh_host, port=ssh_port, username=ssh_user, password=fgt_password,
                  look_for_keys=False, allow_agent=False, timeout=15)
        try:
            _, stdout, _ = c.exec_command("\n".join(lines))
            text = stdout.read().decode()
            assert stdout.channel.recv_exit_status() == 0, text
            return text
        finally:
            c.close()

    def li(task):
        return tr.find_element(By.CSS_SELECTOR, f'#progress li[data-task="{task}"]')

    def begun(task):
        """The task is current and its starting snapshot taken (its start-over button shows)."""
        wait(f"task {task} current with its starting snapshot", lambda: li(task).get_attribute(
            "data-state") == "current" and li(task).find_elements(By.CSS_SELECTOR, "button[data-restart]"))

    def click(task, css):
        def clicked():
            try:
                b = li(task).find_elements(By.CSS_SELECTOR, css)
                if b and b[0].is_displayed() and b[0].is_enabled():
                    b[0].click()
                    return True
            except StaleElementReferenceException:
                pass
            return False
        wait(f"{css} of task {task}", clicked)

    def retry(what, act):
        """The trainee's client retries, as a real one would, until the device answers."""
        return wait(what, lambda: act() or True)

    def task(task_id, act, done_count, also=()):
        begun(task_id)
        retry(f"the trainee's action for {task_id}", act)
        t0 = time.monotonic()
        for t in (task_id, *also):
            wait(f"task {t} ticked on the trainee page", lambda: li(t).get_attribute("data-state") == "done")
        text = wait(f"{done_count}/{TOTAL} on the instructor page",
                    lambda: (lambda p: p if p.startswith(f"{done_count}/{TOTAL}") else None)(inst_progress(1)))
        out["latency_ms"][task_id] = round((time.monotonic() - t0) * 1000)
        out["instructor_counts"].append(text.split(" ")[0])

    # 1. FortiGate console: logging to FortiAnalyzer.
    task("faz-logging", lambda: console([
        "config log fortianalyzer setting", "set status enable", "set server 10.115.1.20",
        "set upload-option realtime", "end"]), 1)

    # A hint on the trainee page.
    begun("faz-authorize")
    click("faz-authorize", "button[data-hint]")
    out["hint"] = wait("the hint shown", lambda: (lambda h: h[0].text if h else None)(
        li("faz-authorize").find_elements(By.CSS_SELECTOR, ".hint")))
    # The instructor sees it (hints shown per task).
    out["instructor_hint"] = wait("the hint on the instructor page", lambda: next((
        e.text for e in inst.find_elements(By.CSS_SELECTOR, '#labs tbody tr.lab[data-index="1"] .progress li')
        if "hints 1/" in e.text), None))
    shoot("01-hint")

    # 2. FortiAnalyzer JSON-RPC: authorize the FortiGate.
    task("faz-authorize", lambda: rpc("exec", "/dvm/cmd/add/device",
                                      {"adom": "root", "device": {"name": "FGT-LAB"}}), 2)

    # 3. FortiOS REST: the EMS connector.
    def connector():
        st, body = fgt("POST", "/api/v2/cmdb/endpoint-control/fctems",
                       {"name": "EMS-LAB", "server": "10.115.1.30", "https-port": 443})
        assert st == 200, body
    task("ems-connector", connector, 3)

    # 4. EMS REST: authorize the FortiGate.
    def ems_authorize():
        rows = ems_call("GET", "client_certificates/index")["data"]
        assert rows, "the FortiGate is not on EMS yet"
        ems_call("PATCH", f"client_certificates/{rows[0]['id']}/set", {"authorized": True})
    task("ems-authorize", ems_authorize, 4)

    # 5. FortiGate console: the article's policy.
    task("policy", lambda: console([
        "config firewall policy", "edit 0", 'set srcintf "port3"', 'set dstintf "virtual-wan-link"',
        'set srcaddr "10.115.2.52/32"', 'set dstaddr "all"', "set action accept",
        'set schedule "always"', 'set service "ALL"', "set utm-status enable",
        'set ssl-ssh-profile "certificate-inspection"', 'set webfilter-profile "monitor-all"',
        "set logtraffic all", "set nat enable", "next", "end"]), 5)

    # 6. A wrong start (a stray address through REST), started over on the trainee page: the lab
    # is back as the task began; then the stitch done right on the console.
    begun("stitch")

    def scratch():
        st, body = fgt("POST", "/api/v2/cmdb/firewall/address",
                       {"name": "class-scratch", "subnet": "10.9.9.9 255.255.255.255"})
        assert st == 200, body
    retry("the stray address", scratch)
    click("stitch", "button[data-restart]")
    wait("the confirmation", lambda: tr.switch_to.alert)
    tr.switch_to.alert.accept()
    out["restart_message"] = wait("the started-over message", lambda: (
        lambda t: t if "started over" in t else None)(tr.find_element(By.ID, "ex-msg").text), 120)
    shoot("02-restarted")
    out["scratch_after_restart"] = wait("the FortiGate after the restore", lambda: fgt(
        "GET", "/api/v2/cmdb/firewall/address/class-scratch")[0])
    out["policy_after_restart"] = li("policy").get_attribute("data-state")
    task("stitch", lambda: console([
        "config system automation-stitch", 'edit "Compromised Host Quarantine"', "set status enable",
        "next", "end"]), 6)

    # 7. FortiAnalyzer JSON-RPC: the JSON API log.
    task("jsonapi-log", lambda: rpc("set", "/cli/global/system/global",
                                    {"data": {"jsonapi-log": "all"}}), 7)

    # 8, 9. PC-52 downloads the EICAR test file; FortiAnalyzer, the stitch and EMS do the rest.
    def eicar():
        r = requests.post(pc52 + "/_lab/fetch", json={"url": "http://www.eicar.org/download/eicar.com"},
                          headers={"X-Fortilab-Token": lab_token}, verify=ca, timeout=30)
        assert r.status_code == 200, r.text
    task("eicar", eicar, 9, also=("quarantine",))

    # 10. EMS REST: release PC-52.
    def release():
        eps = ems_call("GET", "endpoints/index?ip_addr=10.115.2.52")["data"]["endpoints"]
        ems_call("POST", "clients/unquarantine", {"ids": [eps[0]["device_id"]]})
    task("release", release, 10)

    # 11. FortiAnalyzer JSON-RPC: acknowledge.
    task("acknowledge", lambda: rpc("update", "/ioc/adom/root/events/ack",
                                    {"events": [{"source-ip": "10.115.2.52", "comment": "trainee"}]}), 11)

    out["trainee_progress"] = tr.find_element(By.CSS_SELECTOR, "#progress .count").text
    out["trainee_done"] = len(tr.find_elements(By.CSS_SELECTOR, "#progress .tasks > li.done"))
    out["instructor_after"] = [inst_progress(1), inst_progress(2)]
    shoot("03-done")
finally:
    for d in DRIVERS:
        d.quit()
print(json.dumps(out))
