"""The dashboard in a real browser: headless Chromium (Debian's `chromium`,
driven by Playwright) opens the page of a `packetflow serve` hub that has a
Python and a Node.js handler process connected and traffic running, and the
test reads the rendered page: both peers with their languages, a chart with
points, the row of a PF500 and its trace. A screenshot is saved as
target/dashboard.png. With auth on, the data answers 401 without a token and
the page asks for one.
"""
import json
import os
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from conftest import CLI, PARTICIPANTS, TARGET, WAIT, Proc, health, start_hub, wait_until

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the suite's script installs it
    if os.environ.get("PACKETFLOW_INTEROP_REQUIRE_ALL"):
        raise
    pytest.skip("playwright is not installed", allow_module_level=True)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_WAIT_MS = int(WAIT * 1000)
VIEWER_TOKEN = "dashboard-viewer-token-0123456789"
WORKER_TOKEN = "dashboard-worker-token-0123456789"


def page_url(ws_url):
    return ws_url.replace("ws://", "http://", 1).rsplit("/packetflow/v1", 1)[0] + "/"


def http_status(url, token=None):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM} (interop/scripts/test.sh installs Debian's chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


class Traffic:
    """Echo requests through the hub from a submitter process, one after
    another, until stopped (bounded in count too)."""

    def __init__(self, submitter, elements, limit=200_000):
        self.submitter, self.elements, self.limit = submitter, elements, limit
        self.stop = threading.Event()
        self.sent = 0
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stop.is_set() and self.sent < self.limit:
                element = self.elements[self.sent % len(self.elements)]
                result = self.submitter.request("df", element, {"n": self.sent})
                assert result["status"] == "success", result
                self.sent += 1
        except Exception as e:  # reported by close()
            self.error = e

    def close(self):
        self.stop.set()
        self.thread.join(timeout=WAIT)
        assert not self.thread.is_alive(), "the traffic thread did not stop"
        assert self.error is None, f"traffic failed: {self.error}"


def announced(ws_url):
    return {key for peer in health(ws_url)["peers"] for key in (peer.get("handlers") or [])}


def test_a_polyglot_hub_in_the_browser(browser):
    hub, url = start_hub("hub-dashboard")
    procs = [hub]
    traffic = None
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    try:
        procs.append(PARTICIPANTS["python"].serve(url, "json"))
        procs.append(PARTICIPANTS["node"].serve(url, "msgpack"))
        wait_until(lambda: {"df:echo_python", "df:echo_node"} <= announced(url), "the hub knows both handlers")
        submitter = PARTICIPANTS["rust"].submitter(url, "json")
        procs.append(submitter.proc)
        traffic_submitter = PARTICIPANTS["rust"].submitter(url, "json")
        procs.append(traffic_submitter.proc)
        traffic = Traffic(traffic_submitter, ["echo_python", "echo_node"])

        page.goto(page_url(url))
        assert page.url.endswith("/ui/"), page.url
        page.wait_for_selector('#peers tbody tr[data-runtime="python"]', timeout=BROWSER_WAIT_MS)
        page.wait_for_selector('#peers tbody tr[data-runtime="node"]', timeout=BROWSER_WAIT_MS)
        peers = page.inner_text("#peers tbody")
        assert "python" in peers and "node" in peers, peers
        assert "msgpack" in peers and "json" in peers, f"each peer's encoding: {peers}"
        handlers = page.inner_text("#handlers tbody")
        assert "df:echo_python" in handlers and "df:echo_node" in handlers, handlers

        # The sampler needs two seconds of a key to draw its first point. (The
        # page's content security policy forbids eval, so the waits are
        # selectors, not wait_for_function.)
        page.wait_for_selector(
            '#chart-rate:not([data-points="0"]):not([data-points="1"])', timeout=BROWSER_WAIT_MS
        )
        assert page.locator("#chart-rate canvas").count() >= 1
        assert page.locator("#chart-latency canvas").count() >= 1
        keys = page.inner_text("#keys tbody")
        assert "df:echo_python" in keys and "df:echo_node" in keys, keys

        failed = submitter.request("df", "fail_python", {"why": "on purpose"})
        assert failed["status"] == "error" and failed["error"]["code"] == "PF500", failed
        row = page.wait_for_selector('#failures tbody tr[data-code="PF500"]', timeout=BROWSER_WAIT_MS)
        text = row.inner_text()
        assert "df:fail_python" in text, text
        assert "python" in text, f"the peer that served it: {text}"
        page.wait_for_selector('#errors tbody tr[data-code="PF500"]', timeout=BROWSER_WAIT_MS)

        # Its trace, hop by hop, from the row's button.
        row.query_selector("button").click()
        page.wait_for_selector('#trace tbody tr[data-event="answered"]', timeout=BROWSER_WAIT_MS)
        trace = page.inner_text("#trace tbody")
        assert "arrived from packetflow-stream (rust" in trace, trace
        assert "answered PF500" in trace and "by interop-python (python" in trace, trace
        assert traffic.sent > 0

        # PACKETFLOW_DASHBOARD_SETTLE_S=N lets the charts fill N seconds
        # before the screenshot (for the README's picture; 0 in the suite).
        settle = int(os.environ.get("PACKETFLOW_DASHBOARD_SETTLE_S", "0"))
        if settle:
            page.wait_for_timeout(settle * 1000)  # time for the charts to fill, not a synchronisation
            row = page.wait_for_selector('#failures tbody tr[data-code="PF500"]', timeout=BROWSER_WAIT_MS)
            row.query_selector("button").click()
            page.wait_for_selector('#trace tbody tr[data-event="answered"]', timeout=BROWSER_WAIT_MS)
        os.makedirs(TARGET, exist_ok=True)
        shot = os.path.join(TARGET, "dashboard.png")
        page.screenshot(path=shot, full_page=True)
        assert os.path.getsize(shot) > 10_000
    finally:
        page.close()
        if traffic:
            traffic.close()
        for p in reversed(procs):
            p.kill()


def test_with_auth_on_the_dashboard_needs_a_token(browser, tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"name": "viewer", "token": VIEWER_TOKEN, "dashboard": True},
        {"name": "worker", "token": WORKER_TOKEN, "submit": ["*"], "serve": ["*"]},
    ]}))
    hub = Proc([CLI, "serve", "--listen", "127.0.0.1:0", "--name", "hub-locked", "--auth", str(tokens)], "hub-locked")
    page = browser.new_page()
    try:
        line = hub.wait_for("listening on", "stderr")
        url = next(w for w in line.split() if w.startswith("ws://"))
        base = page_url(url)
        assert http_status(base + "ui/api/snapshot") == 401
        assert http_status(base + "ui/api/snapshot", WORKER_TOKEN) == 403
        assert http_status(base + "ui/api/snapshot", VIEWER_TOKEN) == 200

        answers = []
        page.on("response", lambda r: answers.append((r.url, r.status)))
        page.goto(base)
        page.wait_for_selector("#auth:not([hidden])", timeout=BROWSER_WAIT_MS)
        assert any(u.endswith("/ui/api/events") and s == 401 for u, s in answers), answers
        assert page.is_hidden("#board")

        page.fill("#auth-token", VIEWER_TOKEN)
        page.click("#auth-form button")
        page.wait_for_selector("#feed-state.live", timeout=BROWSER_WAIT_MS)
        page.wait_for_selector("#node-name:text-is('hub-locked')", timeout=BROWSER_WAIT_MS)
        assert page.is_visible("#board") and page.is_hidden("#auth")
        html = page.content()
        assert VIEWER_TOKEN not in html and WORKER_TOKEN not in html, "the page never shows a token"
    finally:
        page.close()
        hub.kill()
