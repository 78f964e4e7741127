"""Drives the fortilab dashboard in headless Chromium (selenium) against a running lab.

Environment: READY (the ready file of `fortilab up`), ARTIFACTS (directory for screenshots and
metrics.json), REQUESTS_CA_BUNDLE (the lab CA, for the vendor-API checks).

Checks: first paint; the seed scenario run from the dashboard; the topology shows PC-52
quarantined; the timeline shows the causal chain in order; the FortiAnalyzer panel lists the
compromised host; Acknowledge and Unquarantine change the devices' state (checked through their
vendor APIs, not through the dashboard); a killed and restarted device shows as a gap and the
timeline keeps updating; a link fault set in the Links tab shows there and in /_lab/links, and
clears; 1,000 events/s reach the timeline without loss or UI stall.
Prints one JSON object of measurements on stdout.
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
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

READY = json.load(open(os.environ["READY"]))
ART = os.environ["ARTIFACTS"]
CA = READY["ca_cert"]
DASH = READY["dashboard"]
LABTOKEN = READY["lab_token"]
LAB = {"X-Fortilab-Token": LABTOKEN}
IP = "10.115.2.52"
os.makedirs(ART, exist_ok=True)
metrics = {}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait(what, cond, timeout=30.0, every=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the page may be re-rendering
            last = e
        time.sleep(every)
    shot("timeout")
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def shot(name, top=False, el=None):
    p = os.path.join(ART, f"{name}.png")
    try:
        if top:
            driver.execute_script("window.scrollTo(0, 0)")
        elif el:
            driver.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'start'}); window.scrollBy(0, -140)", el)
    except Exception:
        pass
    try:
        driver.save_screenshot(p)
    except Exception as e:
        log("screenshot failed", e)
    return p


# ---------------------------------------------------------------- vendor APIs (lab CA)

S = requests.Session()


def fgt_get(path):
    f = READY["fortigate"]
    r = S.get(f["api"] + path, headers={"Authorization": "Bearer " + f["api_token"]}, verify=CA, timeout=10)
    r.raise_for_status()
    return r.json()


def faz_rpc(method, url, params=None):
    z = READY["fortianalyzer"]
    p = {"url": url, "apiver": 3}
    p.update(params or {})
    body = {"id": 1, "jsonrpc": "2.0", "method": method, "params": [p]}
    r = S.post(z["api"] + "/jsonrpc", json=body, headers={"Authorization": "Bearer " + z["api_token"]}, verify=CA, timeout=10)
    r.raise_for_status()
    return r.json()["result"]


class Ems:
    def __init__(self):
        e = READY["ems"]
        self.base = e["api"]
        self.s = requests.Session()
        r = self.s.post(self.base + "/api/v1/auth/signin", json={"name": e["admin"]["user"], "password": e["admin"]["password"]}, verify=CA, timeout=10)
        r.raise_for_status()
        self.csrf = self.s.cookies.get("csrftoken")

    def endpoint(self, ip):
        r = self.s.get(self.base + "/api/v1/endpoints/index?offset=0&count=100",
                       headers={"Referer": self.base, "X-CSRFToken": self.csrf or "", "Ems-Call-Type": "2"}, verify=CA, timeout=10)
        r.raise_for_status()
        for e in r.json()["data"]["endpoints"]:
            if e["ip_addr"] == ip:
                return e
        return None


# ---------------------------------------------------------------- browser

opts = Options()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
          "--window-size=1920,1300", f"--user-data-dir={tempfile.mkdtemp(prefix='fortilab-chrome-')}"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
driver.set_page_load_timeout(30)


def js(expr, *args):
    return driver.execute_script(expr, *args)


def q(css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def click(css):
    # Panels re-render when their data changes: an element found a moment ago can be replaced
    # before the click reaches it (stale). Find it again and click the new one.
    def clicked():
        try:
            els = [e for e in q(css) if e.is_displayed() and e.is_enabled()]
            if els:
                els[0].click()
                return True
        except StaleElementReferenceException:
            pass
        return False
    wait(f"clickable {css}", clicked)


def tab(name):
    click(f"#tab-{name}")


try:
    # ------------------------------------------------------------ first paint
    # The browser is already running (as a user's would be): its own start-up is not counted.
    driver.get("about:blank")
    t0 = time.monotonic()
    # The URL `fortilab up` prints: the lab token once, then a cookie and the clean URL.
    driver.get(DASH + "?token=" + LABTOKEN)
    wall = (time.monotonic() - t0) * 1000
    assert "token=" not in driver.current_url, driver.current_url

    def paint():
        nav = js("const n = performance.getEntriesByType('navigation')[0]; return n ? n.toJSON() : null")
        p = js("return performance.getEntriesByType('paint').map(e => [e.name, e.startTime])")
        return (nav, dict(p)) if nav and p else None

    nav, p = wait("paint timing", paint, 10)
    metrics["first_paint_ms"] = round(p.get("first-paint", -1), 1)
    metrics["first_contentful_paint_ms"] = round(p.get("first-contentful-paint", -1), 1)
    metrics["response_end_ms"] = round(nav["responseEnd"], 1)
    metrics["dom_content_loaded_ms"] = round(nav["domContentLoadedEventEnd"], 1)
    metrics["load_wall_ms"] = round(wall, 1)
    # Warm: a reload in the same browser.
    driver.refresh()
    nav2, p2 = wait("paint timing after reload", paint, 10)
    metrics["first_contentful_paint_reload_ms"] = round(p2.get("first-contentful-paint", -1), 1)
    log("first paint", metrics)
    # The page carries lab-core's event catalog (the script writes no kind name of its own).
    kinds = wait("event catalog", lambda: js("return window.fortilab && window.fortilab.catalog()"), 10)
    assert "stitch.run" in kinds and "endpoint.fetch" in kinds and len(kinds) > 50, kinds
    assert metrics["first_contentful_paint_ms"] < 500, f"first contentful paint {metrics['first_contentful_paint_ms']} ms"

    # The state stream fills the topology.
    wait("PC-52 in the topology", lambda: q('#topology [data-endpoint="PC-52"][data-state="clean"]'), 20)
    wait("live timeline", lambda: q('#conn[data-conn="live"]'), 10)
    shot("01-idle", top=True)

    # ------------------------------------------------------------ the seed scenario from the dashboard
    Select(q("#scenario-select")[0]).select_by_value("seed-flow.toml")
    t_run = time.monotonic()
    click("#btn-run")

    def done():
        st = q("#player-status")[0].get_attribute("data-status")
        if st == "failed":
            raise SystemExit("scenario failed in the dashboard: " + q("#player-error")[0].text)
        return st == "passed"

    try:
        wait("the seed scenario to pass", done, 90, 0.1)
    except SystemExit as e:
        shot("scenario-failed")
        raise AssertionError(str(e))
    metrics["seed_scenario_from_dashboard_s"] = round(time.monotonic() - t_run, 2)
    steps = q("#player-steps li")
    assert steps and all(s.get_attribute("data-step-status") == "passed" for s in steps), [s.get_attribute("data-step-status") for s in steps]

    # The topology shows PC-52 quarantined.
    wait("PC-52 quarantined in the topology", lambda: q('#topology [data-endpoint="PC-52"][data-state="quarantined"]'), 15)
    wait("its data path blocked", lambda: q('#topology [data-link="PC-52-fortigate"][data-state="blocked"]'), 10)

    # The timeline shows the causal chain in order.
    stages = ["fetch", "log", "ioc", "stitch", "ems", "quarantine"]

    def chain():
        chips = q(f'#story .story[data-story-ip="{IP}"][data-complete="true"] .chip')
        if len(chips) < 6 or not all(c.get_attribute("data-done") == "true" for c in chips[:6]):
            return None
        return [(c.get_attribute("data-stage"), int(c.get_attribute("data-ts"))) for c in chips[:6]]

    ch = wait("the causal chain complete", chain, 15)
    assert [s for s, _ in ch] == stages, ch
    tss = [t for _, t in ch]
    assert tss == sorted(tss), f"chain out of lab-time order: {ch}"
    metrics["chain_fetch_to_quarantine_ms"] = round((tss[-1] - tss[0]) / 1e6, 1)
    # And each stage is highlighted in the timeline itself, in the same order.
    rows = js("""return Array.from(document.querySelectorAll('#timeline .ev[data-stage][data-story-ip="%s"]'))
                 .map(r => [r.dataset.stage, Number(r.dataset.ts)])""" % IP)
    first = {}
    for st, ts in rows:
        first[st] = min(ts, first.get(st, ts))
    assert all(s in first for s in stages), f"timeline rows by stage: {first}"
    order = [first[s] for s in stages]
    assert order == sorted(order), f"timeline stages out of order: {first}"
    # Raw data: expanding the FortiOS web filter log shows the log line.
    row = q('#timeline .ev[data-kind="log.webfilter"]')[0]
    row.click()
    raw = wait("raw log line", lambda: q('#timeline .ev[data-kind="log.webfilter"] pre.raw'), 5)[0].text
    assert 'logid="0317013312"' in raw and "srcip=10.115.2.52" in raw, raw
    js("document.getElementById('timeline').scrollTop = 0")
    click("#tl-story")  # "chain only": the story's rows, highlighted
    wait("chain-only filter", lambda: len(q("#timeline .ev")) == len(q("#timeline .ev.story")), 5)
    shot("02-quarantined-main", top=True)
    click("#tl-story")
    shot_main = os.path.join(ART, "02-quarantined-main.png")

    # The FortiAnalyzer panel lists the compromised host.
    tab("faz")
    host = wait("compromised host row", lambda: q(f'#panel-faz tr[data-compromised-ip="{IP}"][data-verdict="Infected"][data-ack="0"]'), 10)
    assert "Infected" in host[0].text
    shot("03-fortianalyzer", el="#panels")
    tab("fgt")
    wait("FortiGate stitch stats", lambda: "Compromised Host Quarantine" in q("#panel-fgt")[0].text, 10)
    shot("04-fortigate", el="#panels")
    tab("ems")
    wait("EMS shows PC-52 quarantined", lambda: q(f'#panel-ems tr[data-ems-ip="{IP}"][data-quarantined="1"]'), 10)
    code = wait("access code shown", lambda: q(f'#panel-ems tr[data-ems-ip="{IP}"] [data-access-code]'), 10)[0].text
    assert len(code) >= 6, code
    shot("05-ems", el="#panels")

    # ------------------------------------------------------------ Acknowledge, then Unquarantine
    tab("faz")
    click(f'#panel-faz button[data-ack-ip="{IP}"]')

    def faz_acked():
        r = faz_rpc("get", "/ioc/adom/root/compromised-hosts")
        return [h for h in r["data"] if h["epip"] == IP and h["ack"]]

    wait("FortiAnalyzer to list the host as acknowledged (JSON-RPC)", faz_acked, 10, 0.1)
    wait("the FAZ panel to show it", lambda: q(f'#panel-faz tr[data-compromised-ip="{IP}"][data-ack="1"]'), 10)

    tab("ems")
    click(f'#panel-ems button[data-ems-action="unquarantine"][data-ip="{IP}"]')
    ems = Ems()
    wait("EMS to show the endpoint released (REST)", lambda: (ems.endpoint(IP) or {}).get("is_quarantined") == 0, 10, 0.1)
    wait("topology: PC-52 clean again", lambda: q('#topology [data-endpoint="PC-52"][data-state="clean"]'), 15)
    shot("06-released", top=True)
    # The FortiGate's compromised-host entry is cleared by the FortiAnalyzer acknowledgement.
    metrics["dashboard_calls_in_timeline"] = js(
        "return window.fortilab.state ? document.querySelectorAll('#timeline .ev[data-kind=\"dashboard.call\"]').length : 0")
    assert metrics["dashboard_calls_in_timeline"] >= 2

    # ------------------------------------------------------------ endpoint panel: browse
    tab("endpoints")
    inp = wait("browse field", lambda: q("#browse-url-PC-52"), 5)[0]
    inp.clear()
    inp.send_keys("http://news.sky.com/")
    click("#browse-PC-52")
    wait("browse result", lambda: '"ok": true' in q("#ep-result-PC-52")[0].text, 10)
    shot("07-endpoints", el="#panels")

    # ------------------------------------------------------------ kill and restart a device
    tab("devices")
    before = js("return window.fortilab.stats().events")
    click("#dev-kill-fortianalyzer")
    wait("FortiAnalyzer shown down", lambda: q('#topology [data-node="fortianalyzer"][data-up="false"]'), 15)
    wait("the gap in the timeline", lambda: q('#timeline .ev.gap[data-kind="link.down"]'), 15)
    wait("log channel down", lambda: q('#topology [data-link="fgt-faz"][data-state="down"]'), 15)
    shot("08-device-killed", top=True)
    click("#dev-restart-fortianalyzer")
    wait("FortiAnalyzer back", lambda: q('#topology [data-node="fortianalyzer"][data-up="true"]'), 30)
    wait("events reconnected", lambda: q('#timeline .ev[data-kind="link.up"]'), 15)
    wait("log channel up again", lambda: q('#topology [data-link="fgt-faz"][data-state="up"]'), 30)
    # The timeline keeps updating: a new fetch shows up with its FortiAnalyzer record.
    n_before = js("return window.fortilab.stats().events")
    ctrl = READY["endpoints"][0]["control"]
    r = S.post(ctrl + "/_lab/fetch", json={"url": "http://news.sky.com/"}, verify=CA, timeout=10, headers=LAB)
    assert r.json()["ok"], r.text
    wait("new events after the restart", lambda: js("return window.fortilab.stats().events") > n_before, 10)
    wait("FortiAnalyzer receiving logs again", lambda: js(
        "return window.fortilab.stats().events") and q('#timeline .ev[data-kind="log.received"]'), 10)
    metrics["events_seen_across_restart"] = js("return window.fortilab.stats().events") - before
    shot("09-device-restarted", top=True)

    # ------------------------------------------------------------ link faults from the Links tab
    tab("links")
    wait("links listed", lambda: len(q("#link-table tr[data-link-row]")) >= 3, 10)
    pair = js("""const o = Array.from(document.querySelectorAll('#link-pair option')).find((o) => {
                   const ends = o.value.split('|');
                   return ends.includes('fortigate') && ends.includes('fortianalyzer'); });
                 return o ? o.value : null""")
    assert pair, js("return document.getElementById('link-pair').innerHTML")

    def lab_link():
        r = requests.get(DASH + "_lab/links", timeout=10, headers=LAB)
        r.raise_for_status()
        ends = set(pair.split("|"))
        found = [l for l in r.json()["links"] if {l["a"], l["b"]} == ends]
        assert len(found) == 1, r.text
        return found[0]

    def apply_link(state, latency):
        js("document.getElementById('link-pair').value = arguments[0]", pair)
        js("document.getElementById('link-state').value = arguments[0]", state)
        js("document.getElementById('link-latency').value = arguments[0]", latency)
        click("#link-apply")

    def row_text():
        name = lab_link()["name"]
        rows = q('#link-table tr[data-link-row="%s"]' % name)
        return rows[0].text if rows else ""

    apply_link("up", "150ms")
    wait("latency shown in the Links tab", lambda: "150 ms" in row_text(), 10)
    assert lab_link().get("latency_ms") == 150, lab_link()
    apply_link("down", "")
    wait("link shown down", lambda: "down" in row_text(), 10)
    assert lab_link()["state"] == "down", lab_link()
    shot("09b-link-down", el="#panels")
    apply_link("up", "")
    wait("link clean again", lambda: "up" in row_text() and "150 ms" not in row_text(), 10)
    back = lab_link()
    assert back["state"] == "up" and not back.get("latency_ms"), back
    metrics["links_tab_checked"] = True

    # ------------------------------------------------------------ 1,000 events/s
    measure = """const done = arguments[arguments.length - 1];
                 window.fortilab.measureFrames(arguments[0]).then(done);"""
    driver.set_script_timeout(30)
    idle = driver.execute_async_script(measure, 2000)
    js("window.fortilab.resetStats()")
    rate, count = 1000, 5000
    base = js("return window.fortilab.stats().synthetic")
    t_inj = time.monotonic()
    r = requests.post(DASH + "_lab/inject", json={"rate": rate, "count": count}, timeout=10, headers=LAB)
    assert r.json()["ok"], r.text
    busy = driver.execute_async_script(measure, 3500)
    for k in ["p50", "p95", "p99", "max"]:
        metrics[f"idle_frame_gap_{k}_ms"] = round(idle[k], 1)
        metrics[f"load_frame_gap_{k}_ms"] = round(busy[k], 1)
    metrics["idle_fps"] = round(idle["n"] / 2.0, 1)
    metrics["load_fps"] = round(busy["n"] / 3.5, 1)
    # The UI stays responsive while they arrive: a click on a tab is handled within a frame or two.
    # In the page: a click handled, and the next frame painted after it.
    metrics["click_to_next_frame_under_load_ms"] = round(driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const t = performance.now();
        document.getElementById('tab-faz').click();
        requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)));"""), 1)
    assert "active" in q("#panel-faz")[0].get_attribute("class")
    t_click = time.monotonic()
    tab("fgt")
    wait("tab switch during the load", lambda: "active" in q("#panel-fgt")[0].get_attribute("class"), 5, 0.01)
    metrics["selenium_click_roundtrip_under_load_ms"] = round((time.monotonic() - t_click) * 1000, 1)
    wait("all synthetic events", lambda: js("return window.fortilab.stats().synthetic") - base >= count, 30, 0.1)
    metrics["inject_wall_s"] = round(time.monotonic() - t_inj, 2)
    st = js("return window.fortilab.stats()")
    metrics["inject_rate_per_s"] = rate
    metrics["inject_count"] = count
    metrics["synthetic_received"] = st["synthetic"] - base
    metrics["synthetic_max_n"] = st["syntheticMax"]
    metrics["gaps_during_load"] = st["gaps"]
    metrics["max_frame_gap_ms"] = round(st["maxFrameGapMs"], 1)
    fg = js("return window.fortilab.frameGaps()")
    metrics["frame_gap_p50_ms"] = round(fg["p50"], 1)
    metrics["frame_gap_p95_ms"] = round(fg["p95"], 1)
    metrics["frame_gap_p99_ms"] = round(fg["p99"], 1)
    metrics["frames_measured"] = fg["n"]
    metrics["loadavg_1m"] = os.getloadavg()[0]
    metrics["max_render_ms"] = round(st["maxRenderMs"], 1)
    metrics["dom_rows"] = st["rows"]
    metrics["events_kept_in_browser"] = st["events"]
    assert metrics["synthetic_received"] == count, metrics
    assert st["rows"] <= 400, st
    # Smooth: the dashboard's own work per frame stays small, no frame waits a second, and
    # 1,000 events/s do not make the frame rhythm much worse than the same browser idle on the
    # same machine (absolute frame rates depend on the machine's load; they are reported).
    # The render time is wall time: on a machine with more runnable threads than cores the
    # browser waits its turn, so the bound grows with the run queue (50 ms on a quiet machine).
    contention = max(1.0, metrics["loadavg_1m"] / (os.cpu_count() or 1))
    metrics["render_bound_ms"] = round(50 * contention, 1)
    assert metrics["max_render_ms"] < metrics["render_bound_ms"], f"UI stall: {metrics}"
    assert metrics["load_frame_gap_max_ms"] < 1000, f"UI stall: {metrics}"
    assert metrics["load_frame_gap_p95_ms"] <= max(150, 3 * metrics["idle_frame_gap_p95_ms"] + 50), f"UI stall: {metrics}"
    # Every kept event stays filterable: filtering by kind finds all of them.
    fl = q("#tl-filter")[0]
    fl.send_keys("synthetic.tick")
    wait("filter applied", lambda: js("return window.fortilab.stats().matching") >= count, 5)
    fl.clear()
    fl.send_keys(" ")
    js("document.getElementById('tl-filter').value=''; document.getElementById('tl-filter').dispatchEvent(new Event('input'))")
    shot("10-load", top=True)

    # High contrast (projector) view.
    click("#btn-contrast")
    tab("fgt")
    shot("11-high-contrast", top=True)
    metrics["screenshot_main"] = shot_main
finally:
    try:
        driver.quit()
    except Exception:
        pass

with open(os.path.join(ART, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1)
print(json.dumps(metrics))
