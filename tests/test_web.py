"""The web page in a real headless browser (Debian's chromium and chromedriver, driven by selenium)
against a real ``fallwatch run`` on a looped GMDCSA24 fall clip with a real Mosquitto.

One daemon serves every test of this module: bound to 0.0.0.0 (reached through 127.0.0.1), HTTPS
with the test CA's server certificate, a password hashed by the real ``fallwatch web hash-password``;
the browser sends the password as an HTTP Basic header (Chrome DevTools' extra headers). The camera
reads the clip with ``realtime: false`` at ``max_fps`` 5: on a 2-core CI machine the engine takes about
a second per frame, and a clip played in real time would lose most frames and the fall with them
(the daemon warns so); ``loop: true`` plays it again and again. The background is ``blank`` so that
every pixel of the live view away from the people must be black: the camera's picture is never sent.

Screenshots of each page go to docs/screenshots/ (README links them).
"""
from __future__ import annotations

import base64
import csv
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np
import pytest
import yaml

from conftest import MODELS_DIR, REPO, shared_data
from mosquitto import Broker, certs, free_port, wait_until  # noqa: F401 (fixture)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOTS = REPO / "docs" / "screenshots"
CLIP = ("gmdcsa24", "subject1", "Fall", "14.mp4")
PASSWORD = "correct horse battery staple"
START_TIMEOUT_S = 180.0
ALERT_TIMEOUT_S = 420.0


def run_cli(*args: str, env: Optional[Dict[str, str]] = None, input_text: Optional[str] = None
            ) -> subprocess.CompletedProcess:
    """``python -m edge ARGS`` as a user runs it, with ``input_text`` on its standard input."""
    return subprocess.run([sys.executable, "-m", "edge"] + list(args), cwd=str(REPO), env=dict(os.environ, **(env or {})),
                          input=input_text or "", capture_output=True, text=True, timeout=900)


def set_key(text: str, section: str, key: str, value: str) -> str:
    """``text`` (the documented config.yaml) with the first ``key:`` line of top-level ``section``
    given ``value``; the comments stay as they are."""
    start = re.search(r"^%s:\s*$" % re.escape(section), text, re.M)
    assert start, section
    end = re.search(r"^\S", text[start.end():], re.M)
    stop = start.end() + (end.start() if end else len(text) - start.end())
    block = text[start.end():stop]
    new, count = re.subn(r"^(\s*-?\s*%s:)[^\n]*$" % re.escape(key), lambda m: "%s %s" % (m.group(1), value),
                         block, count=1, flags=re.M)
    assert count == 1, (section, key)
    return text[:start.end()] + new + text[stop:]


def comments(text: str):
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


class Site:
    """The running daemon and how to reach it."""

    def __init__(self, folder: Path, config: Path, port: int, ca: Path, proc: subprocess.Popen, log: Path) -> None:
        self.folder, self.config, self.port, self.proc, self.log = folder, config, port, proc, log
        self.base = "https://127.0.0.1:%d" % port
        self.tls = ssl.create_default_context(cafile=str(ca))
        self.auth = "Basic " + base64.b64encode(("admin:" + PASSWORD).encode()).decode()

    def request(self, path: str, body: Any = None, auth: bool = True, headers: Optional[Dict[str, str]] = None
                ) -> Tuple[int, Dict[str, str], bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST" if body is not None else "GET")
        if auth:
            req.add_header("Authorization", self.auth)
        if body is not None:
            req.add_header("Content-Type", "application/json")
            req.add_header("X-Fallwatch", "1")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.tls) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str, body: Any = None) -> Any:
        status, _, data = self.request(path, body)
        assert status == 200, (path, status, data[:300])
        return json.loads(data)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def site(tmp_path_factory, certs, model_onnx):  # noqa: F811 (certs is a fixture)
    clip = shared_data(*CLIP)
    folder = tmp_path_factory.mktemp("web")
    broker = Broker(folder / "broker", certs)
    broker.start()
    hashed = run_cli("web", "hash-password", input_text=PASSWORD + "\n")
    assert hashed.returncode == 0, hashed.stderr
    port = free_port()
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    for section, key, value in [
            ("device_id", None, None),
            ("paths", "models_dir", str(MODELS_DIR)), ("paths", "state_dir", str(folder / "state")),
            ("cameras", "name", "room"), ("cameras", "uri", str(clip)), ("cameras", "max_fps", "5"),
            ("cameras", "loop", "true"), ("cameras", "realtime", "false"),
            ("daemon", "stats_interval_s", "1"),
            ("mqtt", "enabled", "true"), ("mqtt", "host", "127.0.0.1"), ("mqtt", "port", str(broker.port)),
            ("mqtt", "username", "fallwatch"), ("mqtt", "reconnect_min_s", "0.1"),
            ("web", "enabled", "true"), ("web", "bind", "0.0.0.0"), ("web", "port", str(port)),
            ("web", "password_hash", "'%s'" % hashed.stdout.strip()),
            ("web", "background", "blank"),
            ("review", "site_dir", str(folder / "site"))]:
        if key is not None:
            text = set_key(text, section, key, value)
    tls = "  tls:\n    # Serve HTTPS: true | false. Default: false\n    enabled: false\n"
    assert text.count(tls) == 1
    text = text.replace(tls, "  tls:\n    # Serve HTTPS: true | false. Default: false\n    enabled: true\n")
    text = set_key(text, "web", "    cert_file", str(certs.server_cert))
    text = set_key(text, "web", "    key_file", str(certs.server_key))
    config = folder / "config.yaml"
    config.write_text(text, encoding="utf-8")
    config.chmod(0o640)
    log = folder / "daemon.log"
    env = dict(os.environ, **broker.env())
    env.pop("FALLWATCH_WEB_TOKEN", None)
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config), "run", "--events-out",
                                 str(folder / "events.jsonl")], cwd=str(REPO), env=env, stderr=err,
                                stdout=subprocess.DEVNULL)
    s = Site(folder, config, port, certs.ca, proc, log)
    s.original = text
    try:
        assert wait_until(lambda: proc.poll() is not None or _answers(s), START_TIMEOUT_S), s.log_text()[-3000:]
        assert proc.poll() is None, s.log_text()[-3000:]
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        broker.kill()


def _answers(site: Site) -> bool:
    try:
        return site.request("/api/live/room/people")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser(site):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("the web tests need Debian's chromium and its driver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.accept_insecure_certs = True  # the test CA is not in the browser's store; urllib checks it
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": site.auth}})
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, predicate, timeout_s: float = 60.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.25).until(lambda d: predicate(d), what)


def screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / (name + ".png")))


# ------------------------------------------------------------------ the live view


def test_live_view_shows_skeletons_of_the_tracked_person_and_no_picture(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(site.base + "/#live")
    wait_for(browser, lambda d: d.execute_script(
        "const i = document.getElementById('live-room'); return i && i.complete && i.naturalWidth > 0;"),
        what="the live picture loads")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#people-room tr.person"), what="people listed")
    rows = browser.find_elements(By.CSS_SELECTOR, "#people-room tr.person")
    assert rows[0].find_elements(By.TAG_NAME, "td")[1].text in ("normal", "descending", "fallen")
    screenshot(browser, "live")

    # The picture and the people of one frame: where a person is, skeleton pixels; elsewhere black.
    for _ in range(60):
        people = site.json("/api/live/room/people")
        status, headers, jpeg = site.request("/api/live/room.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        if int(headers["X-Fallwatch-Frame"]) == people["frame"] and people["people"]:
            break
        time.sleep(0.3)
    else:
        pytest.fail("no frame with people whose picture and people list match")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    assert w == 640 and h == 480  # web.view_width_px, the clip's 4:3
    lit = image.max(axis=2) > 60
    near = np.zeros((h, w), bool)
    for person in people["people"]:
        pts = np.array([(x, y) for x, y, c in person["keypoints"] if c > 0.05])
        x0, y0 = np.floor(pts.min(axis=0) * (w, h)).astype(int) - 40
        x1, y1 = np.ceil(pts.max(axis=0) * (w, h)).astype(int) + 40
        near[max(y0, 0):y1, max(x0, 0):x1] = True
        box = lit[max(y0, 0):y1, max(x0, 0):x1]
        # the label ("#1 descending") starts at the skeleton's left edge, above it, and may run well
        # past a standing person's narrow box to the right
        near[max(y0 - 40, 0):y0 + 80, max(x0, 0):x0 + 340] = True
        assert box.sum() > 300, "the person's skeleton is not drawn: %d lit pixels" % box.sum()
    assert lit[~near].sum() < 50, "pixels away from the people are not black: the camera's picture was sent"


# ------------------------------------------------------------------ status


def test_status_page_shows_the_daemons_stats_with_mqtt_connected(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(site.base + "/#status")
    wait_for(browser, lambda d: "room" in d.find_element(By.ID, "status-body").text
             and "engine" in d.find_element(By.ID, "status-body").text, what="stats shown")
    wait_for(browser, lambda d: "connected\nyes" in d.find_element(By.ID, "status-body").text
             or "connected yes" in d.find_element(By.ID, "status-body").text, what="MQTT connected")
    text = browser.find_element(By.ID, "status-body").text
    assert "outbox backlog" in text and "streaming" in text and "events acknowledged" in text
    assert "undefined" not in text and "NaN" not in text  # every figure shown is one the daemon gives
    status = site.json("/api/status")
    assert status["mqtt"]["connected"] is True and status["cameras"]["room"]["state"] == "streaming"
    assert {"preprocess", "engine", "parse", "track"} <= set(status["stages"])
    screenshot(browser, "status")


# ------------------------------------------------------------------ zones


def _zone_page(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(site.base + "/#zones")
    wait_for(browser, lambda d: d.execute_script(
        "const i = document.getElementById('zone-image'); return i.complete && i.naturalWidth > 0;"),
        what="the camera's picture under the editor")
    return browser.find_element(By.ID, "zone-canvas")


def _click_corners(browser, canvas, corners):
    """Clicks each (x, y) fraction of the canvas; returns them as the page must store them."""
    from selenium.webdriver.common.action_chains import ActionChains

    size = canvas.size
    for fx, fy in corners:
        # selenium 4 offsets are from the element's centre
        ActionChains(browser).move_to_element_with_offset(canvas, int(round((fx - 0.5) * size["width"])),
                                                          int(round((fy - 0.5) * size["height"]))).click().perform()
    return size


def test_a_zone_drawn_with_the_mouse_is_saved_with_the_comments_and_in_force_after_reload(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    canvas = _zone_page(site, browser)
    mode = site.config.stat().st_mode
    Select(browser.find_element(By.ID, "zone-kind")).select_by_value("ignore")
    browser.find_element(By.ID, "zone-new").click()
    corners = [(0.05, 0.05), (0.30, 0.05), (0.30, 0.25), (0.05, 0.25)]  # top left: away from the fall
    size = _click_corners(browser, canvas, corners)
    browser.find_element(By.ID, "zone-close").click()
    screenshot(browser, "zones")
    browser.find_element(By.ID, "zone-save").click()
    wait_for(browser, lambda d: "in force" in d.find_element(By.ID, "zone-message").text
             or "refused" in d.find_element(By.ID, "zone-message").text, 90, "the save's answer")
    assert "saved and in force" in browser.find_element(By.ID, "zone-message").text

    text = site.config.read_text(encoding="utf-8")
    zones = yaml.safe_load(text)["cameras"][0]["zones"]
    assert len(zones) == 1 and zones[0]["kind"] == "ignore"
    tolerance = (2.0 / size["width"], 2.0 / size["height"])  # a click lands on a whole pixel
    for (x, y), (fx, fy) in zip(zones[0]["polygon"], corners):
        assert abs(x - fx) <= tolerance[0] and abs(y - fy) <= tolerance[1], zones[0]["polygon"]
    assert comments(text) == comments(site.original)  # every comment of config.yaml kept, in order
    assert site.config.stat().st_mode == mode
    assert "SIGHUP: configuration reloaded from %s" % site.config in site.log_text()
    in_force = site.json("/api/status")["zones_in_force"]["room"]
    assert in_force == zones
    browser.get(site.base + "/#status")
    wait_for(browser, lambda d: "ignore (4 corners)" in d.find_element(By.ID, "status-body").text, 30,
             "the zone shown in force on the status page")


def test_a_bad_zone_is_refused_with_the_validators_reason_and_nothing_written(site, browser):
    from selenium.webdriver.common.by import By

    before = site.config.read_bytes()
    canvas = _zone_page(site, browser)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#zone-list li"), what="the saved zone listed")
    browser.find_element(By.ID, "zone-new").click()
    _click_corners(browser, canvas, [(0.6, 0.1), (0.9, 0.1)])  # two corners only
    browser.find_element(By.ID, "zone-close").click()
    browser.find_element(By.ID, "zone-save").click()
    wait_for(browser, lambda d: "refused" in d.find_element(By.ID, "zone-message").text, 60, "the refusal")
    message = browser.find_element(By.ID, "zone-message").text
    assert "cameras[0].zones[1].polygon" in message and "at least 3 corners" in message, message
    screenshot(browser, "zones-refused")
    assert site.config.read_bytes() == before

    outside = {"zones": [{"kind": "floor", "polygon": [[0.1, 0.1], [1.5, 0.1], [0.5, 0.8]]}]}
    status, _, body = site.request("/api/zones/room", outside)
    assert status == 400
    error = json.loads(body)["error"]
    assert "cameras[0].zones[0].polygon" in error and "between 0 and 1" in error, error
    assert site.config.read_bytes() == before


# ------------------------------------------------------------------ alert review


def test_an_alert_is_marked_false_alarm_and_lands_in_the_site_dataset_that_evaluate_reads(site, browser):
    from selenium.webdriver.common.by import By

    assert wait_until(lambda: site.json("/api/events")["events"], ALERT_TIMEOUT_S), site.log_text()[-3000:]
    browser.get(site.base + "/#review")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#review-events .event"), 30, "an event shown")
    event = browser.find_elements(By.CSS_SELECTOR, "#review-events .event")[0]
    event_id = event.get_attribute("data-id")
    wait_for(browser, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                                     img) for img in event.find_elements(By.TAG_NAME, "img")),
             60, "the snapshot and the timeline load")
    screenshot(browser, "review")
    event.find_element(By.CSS_SELECTOR, "button.false-alarm").click()
    wait_for(browser, lambda d: "saved a false alarm" in d.find_element(By.ID, "review-message").text, 60,
             "the label saved")
    wait_for(browser, lambda d: "labelled: false alarm" in d.find_element(
        By.CSS_SELECTOR, '.event[data-id="%s"] .label' % event_id).text, 30, "the event shown labelled")

    site_dir = site.folder / "site"
    with open(site_dir / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["label"] == "adl", rows
    clip = site_dir / rows[0]["file"]
    assert clip.is_file() and clip.suffix == ".jsonl"
    records = [json.loads(line) for line in clip.read_text().splitlines() if line.strip()]
    assert records and all(r["camera"] == "room" and "people" in r for r in records)

    status, _, body = site.request("/api/events/no-such-event/label", {"label": "adl"})
    assert status == 404 and "no event 'no-such-event'" in json.loads(body)["error"]
    status, _, body = site.request("/api/events/%s/label" % event_id, {"label": "maybe"})
    assert status == 400 and "expected" in json.loads(body)["error"]

    report = run_cli("--config", str(site.config), "evaluate", str(site_dir), "--cache", str(site.folder / "cache"),
                     env={"FALLWATCH_MQTT_PASSWORD": "unused"})
    assert report.returncode == 0, report.stderr[-2000:]
    assert rows[0]["file"] in report.stdout, report.stdout


def test_a_zone_is_moved_and_deleted_with_the_mouse(site, browser):
    """After the review (each save restarts the clip): drag a corner of the saved zone, save; select
    it, delete it, save: the file and the running daemon follow."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = _zone_page(site, browser)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#zone-list li"), what="the saved zone listed")
    size = canvas.size

    def at(fx, fy):
        return int(round((fx - 0.5) * size["width"])), int(round((fy - 0.5) * size["height"]))

    def save_and_wait():
        browser.find_element(By.ID, "zone-save").click()
        wait_for(browser, lambda d: "in force" in d.find_element(By.ID, "zone-message").text
                 or "refused" in d.find_element(By.ID, "zone-message").text, 90, "the save's answer")
        assert "saved and in force" in browser.find_element(By.ID, "zone-message").text

    ActionChains(browser).move_to_element_with_offset(canvas, *at(0.175, 0.15)).click().perform()  # select
    ActionChains(browser).move_to_element_with_offset(canvas, *at(0.30, 0.25)).click_and_hold() \
        .move_by_offset(int(0.10 * size["width"]), int(0.10 * size["height"])).release().perform()
    save_and_wait()
    polygon = yaml.safe_load(site.config.read_text())["cameras"][0]["zones"][0]["polygon"]
    assert polygon[0] == pytest.approx([0.05, 0.05], abs=0.005) and polygon[1] == pytest.approx([0.30, 0.05], abs=0.005)
    assert polygon[2] == pytest.approx([0.40, 0.35], abs=0.005), polygon
    assert site.json("/api/status")["zones_in_force"]["room"][0]["polygon"] == polygon

    ActionChains(browser).move_to_element_with_offset(canvas, *at(0.10, 0.10)).click().perform()
    browser.find_element(By.ID, "zone-delete").click()
    assert not browser.find_elements(By.CSS_SELECTOR, "#zone-list li")
    save_and_wait()
    assert yaml.safe_load(site.config.read_text())["cameras"][0]["zones"] == []
    assert comments(site.config.read_text()) == comments(site.original)
    assert site.json("/api/status")["zones_in_force"]["room"] == []


# ------------------------------------------------------------------ off loopback: nothing without credentials

ROUTES = ["/", "/index.html", "/static/app.js", "/static/style.css", "/api/cameras", "/api/status",
          "/api/live/room.jpg", "/api/live/room/people", "/api/events", "/api/events/x/snapshot.jpg",
          "/api/events/x/timeline.png", "/no-such-page"]
POSTS = ["/api/zones/room", "/api/events/x/label"]


def test_off_loopback_every_page_and_api_answers_401_without_credentials(site):
    bad = "Basic " + base64.b64encode(b"admin:wrong password").decode()
    before = site.config.read_bytes()
    for path in ROUTES + POSTS:
        body = {"zones": []} if path in POSTS else None
        for headers in ({}, {"Authorization": bad}, {"Cookie": "fallwatch_session=guessed"}):
            status, answer, data = site.request(path, body, auth=False, headers=headers)
            assert status == 401, (path, headers, status)
            assert answer["WWW-Authenticate"].startswith("Basic"), path
            assert b"fallwatch" not in data.lower().replace(b"401: log in", b"") or path == "/", path
    assert site.config.read_bytes() == before
    status, headers, _ = site.request("/api/cameras")
    assert status == 200 and "fallwatch_session=" in headers.get("Set-Cookie", "")
    session = headers["Set-Cookie"].split(";")[0]
    assert site.request("/api/cameras", auth=False, headers={"Cookie": session})[0] == 200
    assert PASSWORD not in site.log_text()


def test_config_check_refuses_a_page_off_loopback_without_authentication(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("web:\n  enabled: true\n  bind: 0.0.0.0\n", encoding="utf-8")
    result = run_cli("--config", str(config), "config", "check", env={"FALLWATCH_WEB_TOKEN": ""})
    assert result.returncode == 2
    assert "web.bind: got '0.0.0.0', which is not loopback, and no authentication is set" in result.stderr
    hashed = run_cli("web", "hash-password", input_text="s3cret-for-the-page\n").stdout.strip()
    config.write_text("web:\n  enabled: true\n  bind: 0.0.0.0\n  password_hash: '%s'\n" % hashed, encoding="utf-8")
    assert run_cli("--config", str(config), "config", "check", env={"FALLWATCH_WEB_TOKEN": ""}).returncode == 0
    shown = run_cli("--config", str(config), "config", "show", env={"FALLWATCH_WEB_TOKEN": ""}).stdout
    assert hashed not in shown and "password_hash: '***'" in shown


def test_a_token_from_the_environment_opens_the_page_and_nothing_else_does(tmp_path):
    """The page's server on a real socket (no daemon behind it: the status says so) with a token from
    the environment variable named by web.token_env: Bearer and Basic with the token pass; others 401."""
    from edge.config import load_config
    from edge.web.server import WebServer

    config_file = tmp_path / "config.yaml"
    config_file.write_text("web:\n  enabled: true\n  bind: 127.0.0.1\n  port: %d\n  token_env: PAGE_TOKEN\n"
                           % free_port(), encoding="utf-8")
    token = "a-token-of-32-characters-0123456"
    config = load_config(config_file, env={"PAGE_TOKEN": token})
    assert token not in repr(config) and token not in json.dumps(config.to_dict(redact=False))
    web = WebServer(config).start()
    try:
        def get(headers):
            req = urllib.request.Request("http://127.0.0.1:%d/api/status" % web.port, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as exc:
                return exc.code, None

        basic = "Basic " + base64.b64encode(("admin:" + token).encode()).decode()
        assert get({"Authorization": "Bearer " + token}) == (200, {"type": "stats", "running": False})
        assert get({"Authorization": basic})[0] == 200
        for wrong in ({}, {"Authorization": "Bearer " + token[:-1]}, {"Authorization": "Bearer"},
                      {"Authorization": "Basic " + base64.b64encode(("root:" + token).encode()).decode()},
                      {"Authorization": "Basic !!"}):
            assert get(wrong)[0] == 401, wrong
    finally:
        web.stop()
    from edge.settings import ConfigError

    with pytest.raises(ConfigError, match=r"web\.token_env: the token is 5 characters long; use at least 16"):
        load_config(config_file, env={"PAGE_TOKEN": "short"})


def test_sigterm_stops_the_daemon_and_its_page(site):
    """Last: the daemon of this module stops on SIGTERM with status 0, its page with it."""
    site.proc.send_signal(signal.SIGTERM)
    assert site.proc.wait(60) == 0, site.log_text()[-2000:]
    log = site.log_text()
    assert "web page stopped" in log and "stopped (SIGTERM)" in log
    assert log.index("web page stopped") < log.index("stopped (SIGTERM)")
    with pytest.raises(OSError):
        site.request("/api/cameras")
