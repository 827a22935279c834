"""The web console in a real browser: a batond with `--console` (and, where a test acts,
`--console-actions`) is driven by headless Chromium through Selenium, and each test checks
what a person would see on the page. Screenshots go to test-output/console/."""
import json
import pathlib
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conformance import Batond, eventually
from conftest import ROOT, http_port

SCREENSHOTS = ROOT / "test-output" / "console"


def chromium_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise AssertionError("the console's tests need chromium and chromedriver: scripts/install-deps test installs them")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def console():
    server = Batond(["--http-listen", "127.0.0.1:0", "--console-actions"])
    yield server
    server.stop()


@pytest.fixture
def read_only_console():
    server = Batond(["--http-listen", "127.0.0.1:0", "--console"])
    yield server
    server.stop()


class Client:
    """One socket connection, as a worker or a producer holds it."""

    def __init__(self, batond):
        self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.connection.connect(batond.socket_path)
        self.replies = self.connection.makefile()

    def send(self, **request):
        self.connection.sendall(json.dumps(request).encode() + b"\n")
        reply = json.loads(self.replies.readline())
        assert reply["ok"], reply
        return reply

    def close(self):
        # The socket closes only once the file made from it has closed too.
        self.replies.close()
        self.connection.close()


def url(batond, path):
    return f"http://127.0.0.1:{http_port(batond)}{path}"


def shot(browser, name):
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def wait_for(browser, condition, seconds=15):
    # A page being replaced, or refreshed in place, leaves elements found a moment ago stale.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(browser, seconds, poll_frequency=0.1, ignored_exceptions=ignored).until(lambda _: condition())


def cell(browser, queue, column):
    return browser.find_element(By.CSS_SELECTOR, f'tr[data-queue="{queue}"] [data-count="{column}"]').text


def post(address, fields, headers=None):
    """A POST as a form would send it; the status and the body."""
    request = urllib.request.Request(address, data=urllib.parse.urlencode(fields).encode(), method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_queues_page_shows_each_state_counted(console, browser):
    client = Client(console)
    client.send(op="hello", client="counter")
    for index in range(7):
        client.send(op="enqueue", queue="docs", payload={"doc": index}, max_attempts=1)
    client.send(op="enqueue", queue="mail", payload={"to": "someone"})
    running = client.send(op="claim", queues=["docs"])["job"]
    failed = client.send(op="claim", queues=["docs"])["job"]
    client.send(op="fail", job=failed["id"], token=failed["token"], error="HTTP 503 from the parser")
    done = client.send(op="claim", queues=["docs"])["job"]
    client.send(op="complete", job=done["id"], token=done["token"])
    paused = client.send(op="enqueue", queue="docs", payload={"doc": "held"})["job"]
    client.send(op="pause", job=paused)
    client.send(op="pause_queue", queue="mail")

    browser.get(url(console, "/queues"))
    assert browser.title.startswith("Queues")
    counts = {state: cell(browser, "docs", state) for state in ("queued", "running", "failed", "completed", "paused", "cancelled")}
    # The running cell says "1", with the queue's limit after it when it has one.
    assert counts == {"queued": "4", "running": "1", "failed": "1", "completed": "1", "paused": "1", "cancelled": "0"}
    assert cell(browser, "mail", "queued") == "1"
    assert "paused" in browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="mail"] th').text
    assert browser.find_element(By.CSS_SELECTOR, "[data-health]").get_attribute("data-health") == "ok"
    shot(browser, "queues")
    assert running["id"] != failed["id"]
    client.close()


def test_a_job_page_shows_its_checkpoint_events_and_escapes_what_it_shows(console, browser):
    client = Client(console)
    parent = client.send(op="enqueue", queue="pipeline", payload={"document": "<script>window.injected = 1</script>"},
                         trace={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})["job"]
    lease = client.send(op="claim", queues=["pipeline"], worker="ocr-7")["job"]
    client.send(op="checkpoint", job=lease["id"], token=lease["token"], state={"stage": "ocr", "pages_done": 12},
                progress={"percent": 40, "message": "page 12 of 30"})
    client.send(op="fail", job=lease["id"], token=lease["token"], error="OCR engine timed out", retry_in_ms=0)
    lease = client.send(op="claim", queues=["pipeline"], worker="ocr-8")["job"]
    follow_up = client.send(op="complete", job=lease["id"], token=lease["token"], result={"pages": 30},
                            enqueue=[{"queue": "embed", "payload": {"of": parent}}])["jobs"][0]["job"]

    browser.get(url(console, f"/jobs/{parent}"))
    assert browser.find_element(By.CSS_SELECTOR, "[data-job-state]").text == "completed"
    events = [item.get_attribute("data-event") for item in browser.find_elements(By.CSS_SELECTOR, "#events li")]
    assert events == ["enqueued", "claimed", "checkpointed", "failed", "claimed", "completed"]
    timeline = browser.find_element(By.ID, "events").text
    assert "by ocr-7" in timeline and "OCR engine timed out" in timeline
    assert json.loads(browser.find_element(By.ID, "checkpoint").text) == {"stage": "ocr", "pages_done": 12}
    assert json.loads(browser.find_element(By.ID, "result").text) == {"pages": 30}
    assert browser.find_element(By.ID, "trace").text == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert browser.find_element(By.ID, "progress").text == "40% · page 12 of 30"
    # The payload's markup is shown as text, never run.
    assert json.loads(browser.find_element(By.ID, "payload").text)["document"] == "<script>window.injected = 1</script>"
    assert browser.execute_script("return window.injected === undefined")
    shot(browser, "job")
    # The follow-up links back to its parent, and the parent to it.
    browser.find_element(By.CSS_SELECTOR, f'#follow-ups a[href="/jobs/{follow_up}"]').click()
    wait_for(browser, lambda: browser.find_element(By.CSS_SELECTOR, "h1").text.startswith(f"Job {follow_up}"))
    assert browser.find_element(By.ID, "parent").text == str(parent)
    client.close()


def test_a_cancel_from_the_page_cancels_the_job_and_says_so_in_its_events(console, browser):
    client = Client(console)
    job = client.send(op="enqueue", queue="costly", payload={"model": "large"})["job"]
    lease = client.send(op="claim", queues=["costly"], worker="llm-1")["job"]

    browser.get(url(console, f"/jobs/{job}"))
    browser.find_element(By.CSS_SELECTOR, '#actions button[value="cancel"]').click()
    alert = WebDriverWait(browser, 10).until(lambda driver: driver.switch_to.alert)
    assert f"Cancel job {job}?" in alert.text
    alert.accept()
    wait_for(browser, lambda: browser.find_element(By.CSS_SELECTOR, "[data-job-state]").text == "cancelled")
    assert "via web console" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    shot(browser, "cancelled")

    stored = client.send(op="get", job=job)["job"]
    assert stored["state"] == "cancelled" and stored["last_error"] == "cancelled via web console"
    cancelled = client.send(op="events", job=job)["events"][-1]
    assert cancelled["event"] == "cancelled" and cancelled["reason"] == "cancelled via web console"
    # The worker learns at its next heartbeat.
    refused = json.loads(send_raw(client, {"op": "heartbeat", "job": job, "token": lease["token"]}))
    assert refused["error"]["code"] == "cancelled"
    client.close()


def send_raw(client, request):
    client.connection.sendall(json.dumps(request).encode() + b"\n")
    return client.replies.readline()


def test_retry_pause_and_resume_from_the_pages(console, browser):
    client = Client(console)
    job = client.send(op="enqueue", queue="flaky", payload={}, max_attempts=1)["job"]
    lease = client.send(op="claim", queues=["flaky"])["job"]
    client.send(op="fail", job=job, token=lease["token"], error="upstream 500")

    browser.get(url(console, f"/jobs/{job}"))
    for action, state in (("retry", "queued"), ("pause", "paused"), ("resume", "queued")):
        browser.find_element(By.CSS_SELECTOR, f'#actions button[value="{action}"]').click()
        wait_for(browser, lambda: browser.find_element(By.CSS_SELECTOR, "[data-job-state]").text == state)
    reasons = [(event["event"], event.get("reason")) for event in client.send(op="events", job=job)["events"][-3:]]
    assert reasons == [("retried", "via web console"), ("paused", "via web console"), ("resumed", "via web console")]

    browser.get(url(console, "/queues"))
    browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="flaky"] button[value="pause"]').click()
    wait_for(browser, lambda: "paused" in browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="flaky"] th').text)
    assert client.send(op="stats")["paused_queues"] == ["flaky"]
    client.close()


def test_without_the_actions_flag_no_action_is_offered_and_a_post_is_refused(read_only_console, browser):
    client = Client(read_only_console)
    job = client.send(op="enqueue", queue="docs", payload={"doc": 1})["job"]
    browser.get(url(read_only_console, f"/jobs/{job}"))
    assert browser.find_element(By.CSS_SELECTOR, "[data-job-state]").text == "queued"
    assert browser.find_elements(By.CSS_SELECTOR, "#actions, form[method=post]") == []
    assert "read-only" in browser.find_element(By.CSS_SELECTOR, "header").text
    shot(browser, "read-only")
    browser.get(url(read_only_console, "/queues"))
    assert browser.find_elements(By.CSS_SELECTOR, "form[method=post]") == []

    status, body = post(url(read_only_console, f"/jobs/{job}/cancel"), {"csrf": "anything"})
    assert status == 403 and "--console-actions" in body
    assert client.send(op="get", job=job)["job"]["state"] == "queued"
    client.close()


def test_a_post_from_another_site_or_without_the_pages_token_is_refused(console, browser):
    client = Client(console)
    job = client.send(op="enqueue", queue="docs", payload={"doc": 1})["job"]
    browser.get(url(console, f"/jobs/{job}"))
    token = browser.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")
    address = url(console, f"/jobs/{job}/cancel")
    port = http_port(console)

    assert post(address, {})[0] == 403
    assert post(address, {"csrf": "0" * len(token)})[0] == 403
    assert post(address, {"csrf": token}, {"Origin": "http://evil.example"})[0] == 403
    assert post(address, {"csrf": token}, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    # A name an attacker's DNS points at 127.0.0.1 is not this console's.
    assert post(address, {"csrf": token}, {"Host": f"evil.example:{port}"})[0] == 403
    request = urllib.request.Request(url(console, f"/jobs/{job}"), headers={"Host": f"evil.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as page:
        urllib.request.urlopen(request, timeout=10)
    assert page.value.code == 421
    assert client.send(op="get", job=job)["job"]["state"] == "queued"

    # The same POST as the page's own form sends it acts.
    status, _ = post(address, {"csrf": token}, {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})
    assert status == 200  # urllib follows the redirect to the job's page
    assert client.send(op="get", job=job)["job"]["state"] == "cancelled"
    client.close()


def test_a_page_left_open_updates_when_its_job_completes(console, browser):
    client = Client(console)
    job = client.send(op="enqueue", queue="live", payload={"doc": 1})["job"]
    lease = client.send(op="claim", queues=["live"], worker="w1")["job"]
    browser.get(url(console, f"/jobs/{job}"))
    assert browser.find_element(By.CSS_SELECTOR, "[data-job-state]").text == "running"
    # Marks this document: a reload would lose the mark.
    browser.execute_script("window.sameDocument = true")

    client.send(op="complete", job=job, token=lease["token"], result={"ok": True})
    wait_for(browser, lambda: browser.find_element(By.CSS_SELECTOR, "[data-job-state]").text == "completed")
    assert browser.execute_script("return window.sameDocument === true")
    assert [item.get_attribute("data-event") for item in browser.find_elements(By.CSS_SELECTOR, "#events li")][-1] == "completed"
    shot(browser, "completed-live")

    # The queues page, left open, counts it too.
    other = client.send(op="enqueue", queue="live", payload={"doc": 2})["job"]
    browser.get(url(console, "/queues"))
    assert cell(browser, "live", "queued") == "1"
    browser.execute_script("window.sameDocument = true")
    lease = client.send(op="claim", queues=["live"])["job"]
    client.send(op="complete", job=other, token=lease["token"])
    wait_for(browser, lambda: cell(browser, "live", "completed") == "2" and cell(browser, "live", "queued") == "0")
    assert browser.execute_script("return window.sameDocument === true")
    client.close()


def test_the_workers_page_shows_who_holds_what(console, browser):
    worker = Client(console)
    worker.send(op="hello", client="embedder-3")
    job = worker.send(op="enqueue", queue="embed", payload={})["job"]
    lease = worker.send(op="claim", queues=["embed"])["job"]
    worker.send(op="heartbeat", job=job, token=lease["token"])

    browser.get(url(console, "/workers"))
    row = browser.find_element(By.XPATH, "//tr[td[1][text()='embedder-3']]")
    assert row.find_element(By.CSS_SELECTOR, '[data-col="jobs-held"]').text == "1"
    assert row.find_element(By.CSS_SELECTOR, f'a[href="/jobs/{job}"]')
    pid = int(row.find_element(By.CSS_SELECTOR, '[data-col="pid"]').text)
    assert pid > 0
    assert "ago" in row.text  # the last heartbeat
    shot(browser, "workers")
    worker.close()
    # A worker that disconnects leaves the page.
    wait_for(browser, lambda: browser.find_elements(By.XPATH, "//tr[td[1][text()='embedder-3']]") == [])


def test_the_jobs_page_filters_by_queue_state_and_error_and_pages(console, browser):
    client = Client(console)
    for index in range(60):
        client.send(op="enqueue", queue="bulk", payload={"n": index}, max_attempts=1)
    client.send(op="enqueue", queue="other", payload={})
    for error in ("quota exceeded for tenant 7", "HTTP 503", "quota exceeded for tenant 9"):
        lease = client.send(op="claim", queues=["bulk"])["job"]
        client.send(op="fail", job=lease["id"], token=lease["token"], error=error)

    browser.get(url(console, "/jobs?queue=bulk"))
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-job]")
    assert len(rows) == 50 and all("bulk" in row.text for row in rows)
    first_page = [row.get_attribute("data-job") for row in rows]
    browser.find_element(By.CSS_SELECTOR, 'a[rel="next"]').click()
    wait_for(browser, lambda: "after=" in browser.current_url)
    second_page = [row.get_attribute("data-job") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-job]")]
    assert len(second_page) == 10 and not set(first_page) & set(second_page)
    assert browser.find_elements(By.CSS_SELECTOR, 'a[rel="next"]') == []

    # The filter form, as a person fills it in.
    browser.get(url(console, "/jobs"))
    browser.find_element(By.NAME, "queue").send_keys("bulk")
    browser.find_element(By.CSS_SELECTOR, 'select[name="state"] option[value="failed"]').click()
    browser.find_element(By.NAME, "error").send_keys("quota")
    browser.find_element(By.CSS_SELECTOR, ".filter button").click()
    wait_for(browser, lambda: "error=quota" in browser.current_url)
    errors = sorted(row.find_element(By.CSS_SELECTOR, ".error").text for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-job]"))
    assert errors == ["quota exceeded for tenant 7", "quota exceeded for tenant 9"]
    shot(browser, "jobs")
    client.close()


def test_the_console_is_off_unless_asked_for(browser):
    server = Batond(["--http-listen", "127.0.0.1:0"])
    try:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url(server, "/queues"), timeout=10)
        assert missing.value.code == 404
        with urllib.request.urlopen(url(server, "/metrics"), timeout=10) as response:
            assert response.status == 200
    finally:
        server.stop()
    assert eventually(lambda: server.process.poll() is not None)
