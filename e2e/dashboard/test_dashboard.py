"""The dashboard at /ui, driven in a real headless Chromium (Debian's chromium and
chromium-driver, through selenium).

A real fulcrum (sdk/harness.py) serves a small shop: one load balancer with two listeners,
two pools and five members on real local HTTP backends, plus a probe load balancer whose
names are HTML. Traffic flows through the listeners the whole time. The browser loads /ui,
signs in with the API token, and the test checks what an operator sees and does: the tree,
names shown as text, a drain made through the API showing within 2 s, a drain and undrain
made from the page landing in the API, an API refusal shown, the traffic figures of
/v1/stats, a change the data plane refused shown failed with why, and a slower refresh when
there are many pools. A screenshot is saved as an
artifact.
"""

import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from harness import TOKEN, Backend, Fulcrum, Steps, check, free_port, native, taken_port, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.environ.get("E2E_ARTIFACTS") or os.path.join(ROOT, "target", "e2e-artifacts")
# A name a user might type to break a page that builds HTML from strings.
HOSTILE = '<img src=x onerror="window.__pwned=1"><b>probe</b> & co'

steps = Steps("dashboard in headless Chromium")


class Ctx:
    pass


def call(c, method, path, body=None, headers=None):
    """The native API with the token; returns (status, JSON body or None, headers)."""
    return native(c.fulcrum.api_url, method, path, body, headers=headers)


def ok(c, method, path, body=None, headers=None):
    status, data, hdrs = call(c, method, path, body, headers)
    check(200 <= status < 300, f"{method} {path} answered {status}: {data}")
    return data, hdrs


def served(c, hdrs):
    """Waits until the change whose response carried `hdrs` is served."""
    wr = hdrs["x-work-request-id"]
    data, _ = ok(c, "GET", f"/v1/work-requests/{wr}/wait?timeout_ms=10000")
    check(data["status"] == "SUCCEEDED", f"work request {wr}: {data}")


def member_of(c, name):
    return c.members[name]


def api_member(c, name):
    m = member_of(c, name)
    data, _ = ok(c, "GET", f"/v1/pools/{m['pool_id']}/members/{m['id']}")
    return data


def set_drain(c, name, drain):
    m = member_of(c, name)
    data, hdrs = ok(c, "PATCH", f"/v1/pools/{m['pool_id']}/members/{m['id']}", {"drain": drain})
    return hdrs


class Traffic:
    """Requests through both listeners on keep-alive connections, about 60 a second, until
    stopped (at most 3 minutes and 20,000 requests)."""

    def __init__(self, ports):
        self.ports = ports
        self.sent = {p: 0 for p in ports}
        self.answered = {p: 0 for p in ports}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        conns = {}
        deadline = time.time() + 180
        total = 0
        while not self.stop_event.is_set() and time.time() < deadline and total < 20000:
            for port in self.ports:
                try:
                    conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conns[port] = conn
                    self.sent[port] += 1
                    conn.request("GET", "/")
                    r = conn.getresponse()
                    r.read()
                    self.answered[port] += 1
                except (OSError, http.client.HTTPException):
                    conns.pop(port, None)
                total += 1
            time.sleep(0.03)
        for conn in conns.values():
            conn.close()

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=10)


# ---- browser helpers -----------------------------------------------------------------------


def start_browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    check(chromium and driver_bin, "chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--window-size=1280,800", f"--user-data-dir={tempfile.mkdtemp(prefix='fulcrum-e2e-chromium-')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_bin))
    # The page as a 1280×800 window shows it, whatever the headless window's frame.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    return driver


def find(c, css):
    return c.driver.find_element(By.CSS_SELECTOR, css)


def finds(c, css):
    return c.driver.find_elements(By.CSS_SELECTOR, css)


def text_of(c, css):
    """The text of the first element matching css, or "" (also while it is re-rendered)."""
    try:
        return find(c, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def see(c, predicate, timeout=5, what="the page to show it"):
    return wait_until(lambda: _quiet(predicate), timeout=timeout, interval=0.02, what=what)


def _quiet(predicate):
    try:
        return predicate()
    except (NoSuchElementException, StaleElementReferenceException):
        return False


def row(c, name):
    return f'tr[data-member-id="{member_of(c, name)["id"]}"]'


def screenshot(c, filename):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, filename)
    check(c.driver.save_screenshot(path), f"screenshot {path} not written")
    print(f"screenshot: {path}")
    return path


# ---- steps ---------------------------------------------------------------------------------


@steps.step
def build_a_shop_through_the_api(c):
    lb, _ = ok(c, "POST", "/v1/loadbalancers", {"name": "shop-prod", "vip_address": "127.0.0.1"})
    c.lb = lb["id"]
    c.members = {}
    pools = {}
    for pool_name, algorithm in (("web", "LEAST_CONNECTIONS"), ("static", "ROUND_ROBIN")):
        pool, _ = ok(c, "POST", f"/v1/loadbalancers/{c.lb}/pools",
                     {"name": pool_name, "protocol": "HTTP", "algorithm": algorithm})
        pools[pool_name] = pool["id"]
        ok(c, "POST", "/v1/healthmonitors",
           {"pool_id": pool["id"], "type": "HTTP", "url_path": "/", "interval_ms": 1000, "timeout_ms": 500})
    c.pools = pools
    layout = [
        ("web", "web-1", dict(delay=0.001), {"weight": 3}),
        ("web", "web-2", dict(delay=0.002), {"weight": 3}),
        ("web", "web-3", dict(delay=0.006, fail_every=15), {"weight": 1}),
        ("static", "static-1", dict(delay=0.0), {}),
        ("static", "static-2", dict(delay=0.0), {"backup": True}),
    ]
    for pool_name, name, behaviour, extra in layout:
        b = Backend(name, **behaviour)
        c.backends.append(b)
        m, _ = ok(c, "POST", f"/v1/pools/{pools[pool_name]}/members",
                  {"name": name, "address": "127.0.0.1", "port": b.port, **extra})
        c.members[name] = m
    c.ports = {}
    for name, pool_name in (("public-http", "web"), ("assets-http", "static")):
        port = free_port()
        _, hdrs = ok(c, "POST", f"/v1/loadbalancers/{c.lb}/listeners",
                     {"name": name, "protocol": "HTTP", "port": port, "default_pool_id": pools[pool_name]})
        served(c, hdrs)
        c.ports[name] = port

    # A second load balancer whose user-chosen names are HTML.
    probe, _ = ok(c, "POST", "/v1/loadbalancers", {"name": HOSTILE, "vip_address": "127.0.0.1"})
    c.probe = probe["id"]
    pool, hdrs = ok(c, "POST", f"/v1/loadbalancers/{c.probe}/pools", {"name": HOSTILE, "protocol": "HTTP"})
    c.probe_pool = pool["id"]
    served(c, hdrs)


@steps.step
def traffic_flows_through_both_listeners(c):
    c.traffic = Traffic([c.ports["public-http"], c.ports["assets-http"]])
    wait_until(lambda: min(c.traffic.answered.values()) >= 30, timeout=15, what="30 answers per listener")


@steps.step
def the_page_loads_without_a_token_and_refuses_a_bad_one(c):
    c.driver.get(c.fulcrum.api_url + "/ui")
    see(c, lambda: find(c, "#login").is_displayed(), what="the sign-in form")
    check(not find(c, "#app").is_displayed(), "the dashboard shows before signing in")
    find(c, "#token").send_keys("not-the-token")
    find(c, "#login-submit").click()
    see(c, lambda: "refused" in text_of(c, "#login-error"), what="the refusal of a bad token")
    check(not find(c, "#app").is_displayed(), "a refused token opened the dashboard")


@steps.step
def signing_in_shows_the_tree(c):
    token_input = find(c, "#token")
    token_input.clear()
    token_input.send_keys(TOKEN)
    find(c, "#login-submit").click()
    see(c, lambda: find(c, "#app").is_displayed(), what="the dashboard after signing in")
    check(c.driver.execute_script("return sessionStorage.getItem('fulcrum.dashboard.token')") == TOKEN,
          "the token is kept in sessionStorage")
    lb_css = f'section[data-lb-id="{c.lb}"]'
    see(c, lambda: text_of(c, f"{lb_css} .lb-name") == "shop-prod", what="the load balancer")
    for name in ("public-http", "assets-http"):
        see(c, lambda: name in text_of(c, f"{lb_css} table.listeners"), what=f"listener {name}")
    for pool_name, pool_id in c.pools.items():
        see(c, lambda: text_of(c, f'div[data-pool-id="{pool_id}"] .pool-name') == pool_name,
            what=f"pool {pool_name}")
    for name, m in c.members.items():
        css = row(c, name)
        # Inside its own pool, with its address:port, weight and state.
        see(c, lambda: finds(c, f'div[data-pool-id="{m["pool_id"]}"] {css}'), what=f"member {name} in its pool")
        cells = find(c, css)
        check(f"127.0.0.1:{m['port']}" in cells.find_element(By.CSS_SELECTOR, ".c-member").text,
              f"{name}: no address:port in {cells.text!r}")
        check(cells.find_element(By.CSS_SELECTOR, ".c-weight").text == str(m["weight"]), f"{name}: weight")
    see(c, lambda: "backup" in text_of(c, f"{row(c, 'static-2')} .c-state"), what="static-2 shown as backup")
    see(c, lambda: "active" in text_of(c, f"{row(c, 'web-1')} .c-state"), what="web-1 shown as active")
    # Health as the API reports it (the monitor marks members online once checked).
    see(c, lambda: text_of(c, f"{row(c, 'web-1')} .c-health") == "online", timeout=10, what="web-1 online")
    see(c, lambda: finds(c, "#wrs tr"), what="recent work requests")
    check(not find(c, "#nodes-panel").is_displayed(), "a single node shows a fleet panel")


@steps.step
def names_are_shown_as_text_never_as_html(c):
    css = f'section[data-lb-id="{c.probe}"]'
    see(c, lambda: text_of(c, f"{css} .lb-name") == HOSTILE, what="the HTML-looking name, as text")
    see(c, lambda: text_of(c, f'div[data-pool-id="{c.probe_pool}"] .pool-name') == HOSTILE,
        what="the HTML-looking pool name, as text")
    check(not finds(c, "#lbs img, #lbs b, #wrs img, #wrs b"), "a name was parsed as HTML")
    check(c.driver.execute_script("return window.__pwned") is None, "a name's script ran")


@steps.step
def a_drain_through_the_api_shows_within_2s(c):
    c.seen_after = []
    for drain, want_state, want_button in ((True, "draining", "Undrain"), (False, "active", "Drain")):
        set_drain(c, "web-2", drain)
        t0 = time.time()
        see(c, lambda: want_state in text_of(c, f"{row(c, 'web-2')} .c-state")
            and text_of(c, f"{row(c, 'web-2')} .c-action button") == want_button,
            timeout=2, what=f"web-2 {want_state} within 2 s")
        c.seen_after.append(time.time() - t0)
    check(all(t < 2 for t in c.seen_after), f"seen after {c.seen_after}")


@steps.step
def drain_and_undrain_from_the_page(c):
    button = f"{row(c, 'web-1')} .c-action button"
    see(c, lambda: text_of(c, button) == "Drain", what="web-1's Drain button")
    find(c, button).click()
    wait_until(lambda: api_member(c, "web-1")["drain"] is True, timeout=5, what="web-1 drained in the API")
    see(c, lambda: "draining" in text_of(c, f"{row(c, 'web-1')} .c-state"), what="web-1 draining on the page")
    see(c, lambda: "Draining" in text_of(c, "#notices"), what="a notice of the drain")
    see(c, lambda: text_of(c, button) == "Undrain", what="web-1's Undrain button")
    find(c, button).click()
    wait_until(lambda: api_member(c, "web-1")["drain"] is False, timeout=5, what="web-1 undrained in the API")
    see(c, lambda: "active" in text_of(c, f"{row(c, 'web-1')} .c-state"), what="web-1 active again")


@steps.step
def an_api_refusal_is_shown(c):
    _, hdrs = ok(c, "PATCH", f"/v1/loadbalancers/{c.lb}",
                 {"locks": [{"type": "FULL", "message": "change freeze"}]})
    served(c, hdrs)
    button = f"{row(c, 'web-3')} .c-action button"
    see(c, lambda: text_of(c, button) == "Drain", what="web-3's Drain button")
    find(c, button).click()
    see(c, lambda: finds(c, ".notice-error"), what="an error notice")
    text = text_of(c, ".notice-error .notice-text")
    check("409" in text and "locked" in text and "web-3" in text, f"the notice says {text!r}")
    check(api_member(c, "web-3")["drain"] is False, "a refused drain changed the member")
    check("active" in text_of(c, f"{row(c, 'web-3')} .c-state"), "the page shows a refused drain")
    _, hdrs = ok(c, "PATCH", f"/v1/loadbalancers/{c.lb}", {"locks": []})
    served(c, hdrs)
    for close in finds(c, ".notice-error .notice-close"):
        close.click()


@steps.step
def traffic_figures(c):
    status, stats, _ = call(c, "GET", "/v1/stats")
    check(status == 200, f"/v1/stats answered {status}: {stats}")
    listener_row = f'tr[data-listener-id="{listener_id(c, "public-http")}"]'
    # Real figures: everything the test itself sent through public-http must be counted.
    sent = c.traffic.answered[c.ports["public-http"]]

    def listener_total():
        t = text_of(c, f"{listener_row} td:last-child") or "—"
        return int(t.replace(",", "")) if t != "—" else -1

    see(c, lambda: listener_total() >= sent, timeout=5, what=f"public-http's total ≥ the {sent} requests sent")
    see(c, lambda: number(text_of(c, f"{listener_row} .c-rps")) > 0, what="public-http's requests/s above 0")
    see(c, lambda: number(text_of(c, f"{row(c, 'web-1')} .c-rps")) > 0, what="web-1's requests/s above 0")
    see(c, lambda: text_of(c, f"{row(c, 'web-1')} .c-p50").endswith("ms"), what="web-1's p50")
    see(c, lambda: text_of(c, f"{row(c, 'web-1')} .c-p99").endswith("ms"), what="web-1's p99")
    see(c, lambda: text_of(c, f"{row(c, 'web-1')} .c-flight").isdigit(), what="web-1's in-flight count")
    see(c, lambda: text_of(c, f"{row(c, 'web-1')} .c-breaker") == "closed", what="web-1's breaker closed")
    see(c, lambda: "req/s" in text_of(c, f'div[data-pool-id="{c.pools["web"]}"] .pool-figures'),
        what="the web pool's figures")
    see(c, lambda: number(text_of(c, "#sum-rps")) > 0, what="the requests/s tile above 0")
    # The backup takes nothing while static-1 serves.
    check(number(text_of(c, f"{row(c, 'static-2')} .c-rps")) == 0, "static-2 (backup) shows traffic")
    print(f"figures: public-http counted ≥ {sent} requests; web-1 at "
          f"{text_of(c, row(c, 'web-1') + ' .c-rps')} req/s, p99 {text_of(c, row(c, 'web-1') + ' .c-p99')}")


def listener_id(c, name):
    data, _ = ok(c, "GET", f"/v1/loadbalancers/{c.lb}/listeners")
    return next(l["id"] for l in data["items"] if l["name"] == name)


def number(text):
    try:
        return float((text or "").replace(",", ""))
    except ValueError:
        return -1


@steps.step
def screenshot_of_a_working_day(c):
    # What an operator would see: the probe gone, web-2 being drained for maintenance,
    # web-3 failing a request now and then.
    _, hdrs = ok(c, "DELETE", f"/v1/loadbalancers/{c.probe}?cascade=true")
    served(c, hdrs)
    set_drain(c, "web-2", True)
    see(c, lambda: not finds(c, f'section[data-lb-id="{c.probe}"]'), what="the probe gone")
    see(c, lambda: "draining" in text_of(c, f"{row(c, 'web-2')} .c-state"), what="web-2 draining")
    see(c, lambda: not finds(c, ".notice"), timeout=8, what="notices gone")
    time.sleep(1.5)  # one more poll, so the figures include the last seconds of traffic
    c.driver.execute_script("window.scrollTo(0, 0)")
    c.shot = screenshot(c, "dashboard.png")


@steps.step
def a_change_the_data_plane_refuses_is_shown_failed(c):
    taken = taken_port()  # another program holds the port: the listener cannot bind
    try:
        port = taken.getsockname()[1]
        listener, hdrs = ok(c, "POST", f"/v1/loadbalancers/{c.lb}/listeners",
                            {"name": "blocked", "protocol": "HTTP", "port": port,
                             "default_pool_id": c.pools["web"]})
        wr = hdrs["x-work-request-id"]
        data, _ = ok(c, "GET", f"/v1/work-requests/{wr}/wait?timeout_ms=10000")
        check(data["status"] == "FAILED", f"the work request of a listener on a taken port: {data}")
        css = f'#wrs tr[data-wr-id="{wr}"]'
        see(c, lambda: text_of(c, f"{css} .c-wr-status") == "failed", what="the work request shown failed")
        see(c, lambda: str(port) in text_of(c, f"{css} .wr-error"), what="why it failed, with the port")
        row_css = f'tr[data-listener-id="{listener["id"]}"]'
        see(c, lambda: "error" in text_of(c, row_css), what="the listener shown in error")
        _, hdrs = ok(c, "DELETE", f"/v1/listeners/{listener['id']}")
        served(c, hdrs)
        see(c, lambda: not finds(c, row_css), what="the listener gone")
    finally:
        taken.close()


@steps.step
def many_pools_slow_the_refresh_down(c):
    # One call per pool each refresh: with 40 more pools the page keeps under its budget of
    # 20 calls a second (the rate limit is per token) by refreshing every 2 to 3 s.
    lb, _ = ok(c, "POST", "/v1/loadbalancers", {"name": "many-pools", "vip_address": "127.0.0.1"})
    for i in range(40):
        _, hdrs = ok(c, "POST", f"/v1/loadbalancers/{lb['id']}/pools", {"name": f"p{i:02}", "protocol": "HTTP"})
    served(c, hdrs)
    see(c, lambda: text_of(c, "#live-text") in ("live · every 2 s", "live · every 3 s"), timeout=8,
        what="'live · every 2 s' (or 3 s) in the status bar")
    _, hdrs = ok(c, "DELETE", f"/v1/loadbalancers/{lb['id']}?cascade=true")
    served(c, hdrs)
    see(c, lambda: text_of(c, "#live-text") == "live", timeout=8, what="a refresh every second again")


@steps.step
def no_script_errors(c):
    problems = [
        e for e in c.driver.get_log("browser")
        # The browser logs every 4xx the page asked for (the bad token, the lock); the page
        # handles those. Anything else is a script error.
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]
    check(not problems, f"browser console errors: {problems}")


def main():
    c = Ctx()
    c.backends = []
    c.traffic = None
    c.driver = None
    c.fulcrum = Fulcrum()
    ok_ = False
    try:
        c.driver = start_browser()
        ok_ = steps.run(c)
        if ok_:
            print(f"figures: drain through the API seen on the page after "
                  f"{', '.join(f'{t * 1000:.0f} ms' for t in c.seen_after)}")
    finally:
        if not ok_:
            if c.driver:
                try:
                    screenshot(c, "dashboard-failure.png")
                except Exception as e:  # the browser may be what failed
                    print(f"no failure screenshot: {e}")
            c.fulcrum.dump_log()
        if c.traffic:
            c.traffic.stop()
        if c.driver:
            c.driver.quit()
        c.fulcrum.stop()
        for b in c.backends:
            b.stop()
    return ok_


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
