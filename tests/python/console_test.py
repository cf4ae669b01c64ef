"""The operator console in a real browser: Debian's chromium, headless, driven
by Playwright (pointed at the system browser; nothing is downloaded), against a
real `redwire` binary with real data, reached through nginx under a path prefix.

It signs in with an admin token and a read-only token, looks at each page as a
person would (counts, the chart, the job's error history, the stream's groups),
redrives a dead-letter group and sees the counts change, purges behind the
typed confirmation, and is refused an action with the read-only token.

Usage: console_test.py PATH_TO_REDWIRE_BINARY
Screenshots of the main pages go to $REDWIRE_SCREENSHOTS (docs/console when
refreshing the README's), else to a temporary directory.
"""

import hashlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import grpc
from google.protobuf import duration_pb2
from playwright.sync_api import expect, sync_playwright

import smoke_test
from smoke_test import free_port, generate_stubs, launch, start_nginx, wait_until_serving

ADMIN_TOKEN = "rw_console_admin_token"
READER_TOKEN = "rw_console_reader_token"
PREFIX = "/ops/redwire"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def pb(service):
    return (importlib.import_module(f"redwire.v1.{service}_pb2"),
            importlib.import_module(f"redwire.v1.{service}_pb2_grpc"))


def chromium_path():
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("chromium is not installed (scripts/deps.sh ensure_chromium)")


def wait_for_http(url, proc):
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} never answered")
            time.sleep(0.05)


def start_proxy(tmp_dir, upstream):
    """nginx serving the admin listener under PREFIX, as an operator's proxy would."""
    proc, port = start_nginx(tmp_dir, f"location {PREFIX}/ {{ proxy_pass http://{upstream}/; }}")
    return proc, f"http://127.0.0.1:{port}{PREFIX}"


def seed(channel):
    """A queue with waiting, completed and dead jobs (two kinds of error), a
    stream with a group and an unacknowledged entry, and a held lock."""
    queue_pb, queue_grpc = pb("queue")
    queues = queue_grpc.QueueStub(channel)
    KEEP_AN_HOUR = duration_pb2.Duration(seconds=3600)
    auth = [("authorization", f"Bearer {ADMIN_TOKEN}")]
    traced = auth + [("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")]
    for i in range(4):
        queues.Enqueue(queue_pb.EnqueueRequest(queue="mail", job=queue_pb.JobSpec(
            payload=f'{{"to": "user{i}@example.com"}}'.encode(), max_attempts=1,
            attributes={"tenant": "acme"}, keep_completed=KEEP_AN_HOUR)), metadata=traced)
    for i in range(5):
        queues.Enqueue(queue_pb.EnqueueRequest(queue="mail", job=queue_pb.JobSpec(
            payload=b"\xff\x00binary")), metadata=auth)
    queues.Enqueue(queue_pb.EnqueueRequest(queue="reports", job=queue_pb.JobSpec(
        payload=b"monthly")), metadata=auth)
    # One job a consumer holds: its page shows when the lease ends.
    queues.Enqueue(queue_pb.EnqueueRequest(queue="exports", job=queue_pb.JobSpec(
        job_id="export-1", payload=b"csv")), metadata=auth)
    queues.Dequeue(queue_pb.DequeueRequest(queue="exports", max_jobs=1,
                                           lease=duration_pb2.Duration(seconds=300)),
                   metadata=auth)
    # The four JSON jobs come out first: three die, one completes.
    taken = queues.Dequeue(queue_pb.DequeueRequest(queue="mail", max_jobs=4),
                           metadata=auth).jobs
    assert len(taken) == 4, taken
    errors = ["smtp: connection timed out", "smtp: connection timed out", "550 no such user"]
    for job, error in zip(taken, errors):
        queues.Nack(queue_pb.NackRequest(queue="mail", item=queue_pb.NackItem(
            job_id=job.job_id, lease_token=job.lease_token, error=error)), metadata=auth)
    last = taken[3]
    queues.Ack(queue_pb.AckRequest(queue="mail", items=[queue_pb.AckItem(
        job_id=last.job_id, lease_token=last.lease_token, result=b"sent")]), metadata=auth)

    stream_pb, stream_grpc = pb("stream")
    streams = stream_grpc.StreamStub(channel)
    for i in range(6):
        streams.Append(stream_pb.AppendRequest(
            stream="orders", fields={"order": f"o-{i}".encode()}), metadata=auth)
    streams.CreateGroup(stream_pb.CreateGroupRequest(stream="orders", group="billing",
                                                     start="0"), metadata=auth)
    # billing-1 takes two entries and never acknowledges them.
    opened = stream_pb.ReadGroupRequest(open=stream_pb.OpenGroup(
        stream="orders", group="billing", consumer="billing-1", max_unacked=2))
    reading = streams.ReadGroup(iter([opened]), metadata=auth)
    entries = 0
    for event in reading:
        if event.WhichOneof("event") == "entry":
            entries += 1
            if entries == 2:
                break
    reading.cancel()

    lock_pb, lock_grpc = pb("lock")
    held = lock_grpc.LockStub(channel).Acquire(lock_pb.AcquireRequest(
        resource="invoice-7", ttl=duration_pb2.Duration(seconds=300)), metadata=auth)

    # A live subscriber of alerts, open until the test ends.
    pubsub_pb, pubsub_grpc = pb("pubsub")
    subscription = pubsub_grpc.PubSubStub(channel).Subscribe(
        pubsub_pb.SubscribeRequest(channels=["alerts"], topics=["order.#"]), metadata=auth)
    assert next(subscription).WhichOneof("event") == "subscribed"
    return held, subscription


class ConsoleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="rw-console-")
        generate_stubs(cls.tmp.name)
        auth_file = os.path.join(cls.tmp.name, "auth.toml")
        sha = lambda token: hashlib.sha256(token.encode()).hexdigest()
        with open(auth_file, "w") as out:
            out.write(f"""
[[tokens]]
name = "operator"
sha256 = "{sha(ADMIN_TOKEN)}"
grants = [{{ services = ["*"], actions = ["*"] }}]

[[tokens]]
name = "on-call-viewer"
sha256 = "{sha(READER_TOKEN)}"
grants = [{{ services = ["*"], actions = ["read"] }}]
""")
        cls.addr = f"127.0.0.1:{free_port()}"
        admin = f"127.0.0.1:{free_port()}"
        cls.log = open(os.path.join(cls.tmp.name, "redwire.log"), "w")
        cls.server = launch(cls.tmp.name, cls.addr, cls.log, "--auth-file", auth_file,
                            "--admin-listen", admin)
        cls.channel = grpc.insecure_channel(cls.addr)
        wait_until_serving(cls.channel, cls.server, cls.log)
        cls.lock, cls.subscription = seed(cls.channel)
        cls.nginx, cls.base = start_proxy(cls.tmp.name, admin)
        wait_for_http(f"{cls.base}/healthz", cls.nginx)
        cls.shots = os.environ.get("REDWIRE_SCREENSHOTS") or os.path.join(cls.tmp.name, "shots")
        os.makedirs(cls.shots, exist_ok=True)
        cls.playwright = sync_playwright().start()
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        cls.browser = cls.playwright.chromium.launch(executable_path=chromium_path(), args=args)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.playwright.stop()
        cls.nginx.terminate()
        cls.nginx.wait(timeout=10)
        cls.subscription.cancel()
        cls.channel.close()
        cls.server.send_signal(signal.SIGTERM)
        code = cls.server.wait(timeout=20)
        cls.log.close()
        cls.tmp.cleanup()
        assert code == 0, f"redwire exited with {code}"

    def stats(self, queue):
        queue_pb, queue_grpc = pb("queue")
        return queue_grpc.QueueStub(self.channel).Stats(
            queue_pb.StatsRequest(queue=queue),
            metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")])

    def open_console(self, token):
        """A fresh browser page on the console, signed in with token."""
        page = self.browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{self.base}/console")
        # The redirect kept the prefix, and the page asks for a token.
        self.assertEqual(page.url, f"{self.base}/console/")
        expect(page.locator("#signin")).to_be_visible()
        page.fill("#token", token)
        page.click("#signin button")
        expect(page.locator("#signout")).to_be_visible()
        return page

    def shot(self, page, name):
        page.screenshot(path=os.path.join(self.shots, f"{name}.png"), full_page=True)

    def test_an_operator_sees_every_page_and_fixes_dead_letters(self):
        page = self.open_console(ADMIN_TOKEN)
        try:
            # Signed in: the token form is gone.
            expect(page.locator("#signin")).to_be_hidden()
            # Overview: the queues with their counts, the stream, a chart per queue.
            mail = page.locator("tr", has=page.locator("a", has_text="mail"))
            expect(mail).to_contain_text("5")  # waiting
            expect(mail.locator("td.num").nth(3)).to_have_text("3")  # dead
            expect(page.locator("svg.spark")).to_have_count(3)
            expect(page.locator("a", has_text="orders")).to_be_visible()
            alerts = page.locator("tr", has_text="alerts")
            expect(alerts.locator("td")).to_have_text(["alerts", "channel", "1", "0"])
            expect(page.locator("tr", has_text="order.#").locator("td").nth(1)).to_have_text("topic")
            expect(page.locator("tr", has_text="invoice-7").locator("td").nth(2)).to_have_text(
                str(self.lock.fencing_token))
            self.shot(page, "overview")

            # Queue: counts per state, and the last hour's chart with this minute's bars.
            page.click("a:text-is('mail')")
            expect(page.locator("h1")).to_contain_text("Queue mail")
            expect(page.locator('.card[data-label="waiting"]')).to_contain_text("5")
            expect(page.locator('.card[data-label="completed"]')).to_contain_text("1")
            expect(page.locator('.card[data-label="dead"]')).to_contain_text("3")
            expect(page.locator("svg.chart rect.enqueued")).not_to_have_count(0)
            expect(page.locator("svg.chart rect.failed")).not_to_have_count(0)
            expect(page.locator("svg.chart rect.completed")).not_to_have_count(0)
            self.shot(page, "queue")

            # Jobs by state, then the job page by lookup.
            page.click(".tabs a:text-is('waiting')")
            expect(page.locator("h1")).to_contain_text("waiting jobs (5)")
            expect(page.locator("tbody tr")).to_have_count(5)
            page.click(".tabs a:text-is('completed')")
            expect(page.locator("tbody tr")).to_have_count(1)
            page.locator("tbody tr a").first.click()
            expect(page.locator("main")).to_contain_text("sent")
            page.go_back()

            # Dead letters grouped by last error.
            page.click(".tabs a:text-is('dead')")
            groups = page.locator("tr.group")
            expect(groups).to_have_count(2)
            expect(groups.nth(0)).to_contain_text("smtp: connection timed out")
            expect(groups.nth(0).locator("td.num")).to_have_text("2")
            expect(groups.nth(1)).to_contain_text("550 no such user")
            self.shot(page, "dead-letters")

            # A dead job: error history, JSON payload, attributes, trace id.
            dead_id = page.locator("tbody tr", has_text="550 no such user").locator("a").first.inner_text()
            page.fill("#lookup", dead_id)
            page.click("text=Look up")
            expect(page.locator("h1")).to_have_text(f"Job {dead_id}")
            expect(page.locator("#errors li")).to_have_text(["550 no such user"])
            expect(page.locator("#job-fields")).to_contain_text(TRACE_ID)
            expect(page.locator("#job-fields")).to_contain_text("dead")
            expect(page.locator("#payload")).to_contain_text('"to": "user')
            page.click("button[data-form=hex]")
            expect(page.locator("#payload")).to_contain_text("7b 22 74 6f 22")
            expect(page.locator("main")).to_contain_text("tenant")
            self.shot(page, "job")

            # Redrive the timed-out group: its two jobs go back to waiting.
            page.go_back()
            expect(page.locator("tr.group")).to_have_count(2)
            page.locator("tr.group", has_text="timed out").locator("button").click()
            expect(page.locator("#notice")).to_have_text("Redrove 2 jobs.")
            expect(page.locator("tr.group")).to_have_count(1)
            expect(page.locator("h1")).to_contain_text("(1)")
            stats = self.stats("mail")
            self.assertEqual((stats.dead, stats.waiting), (1, 7))

            # Purge asks for the queue's name first.
            page.fill("#purge-confirm", "not-mail")
            page.click("#purge")
            expect(page.locator("#notice")).to_contain_text("type the queue's name")
            self.assertEqual(self.stats("mail").dead, 1)
            page.fill("#purge-confirm", "mail")
            page.click("#purge")
            expect(page.locator("#notice")).to_have_text("Purged 1 dead letter.")
            self.assertEqual(self.stats("mail").dead, 0)

            # Pause and resume from the queue page.
            page.goto(f"{self.base}/console/#/queue/mail")
            page.click("#pause")
            expect(page.locator("h1 .tag")).to_have_text("paused")
            self.assertTrue(self.stats("mail").paused)
            page.click("#resume")
            expect(page.locator("h1 .tag")).to_have_text("running")

            # Stream: length, the group with its pending entries, the idle consumer.
            page.goto(f"{self.base}/console/#/stream/orders")
            expect(page.locator('.card[data-label="length"]')).to_contain_text("6")
            billing = page.locator("tr", has_text="billing").first
            expect(billing.locator("td.num").first).to_have_text("2")
            expect(page.locator("main")).to_contain_text("billing-1")
            expect(page.locator("main tbody").last.locator("tr")).to_have_count(6)
            self.shot(page, "stream")
            page.fill("#claim-consumer", "billing-2")
            page.fill("#claim-idle", "0")
            page.click("text=Claim")
            expect(page.locator("#notice")).to_have_text("Claimed 2 entries for billing-2.")
            expect(page.locator("main")).to_contain_text("billing-2")

            # A leased job: its lease's end instead of a due time.
            page.goto(f"{self.base}/console/#/queue/exports/job/export-1")
            fields = page.locator("#job-fields")
            expect(fields.locator("tr", has_text="state").locator("td")).to_have_text("active")
            expect(fields.locator("tr", has_text="lease ends").locator("td")).to_contain_text(
                time.strftime("%Y-", time.gmtime()))

            # Pub/sub: this instance's subscribers.
            page.click("nav a:text-is('Pub/sub')")
            expect(page.locator("h1")).to_have_text("Pub/sub")
            expect(page.locator("tbody tr")).to_have_count(2)

            # Locks: held locks listed; one described with its fencing token.
            page.click("nav a:text-is('Locks')")
            expect(page.locator("tbody tr")).to_have_count(1)
            self.shot(page, "locks")
            page.click("tbody a:text-is('invoice-7')")
            lock = page.locator("#lock")
            expect(lock.locator('.card[data-label="held"]')).to_contain_text("yes")
            expect(lock.locator('.card[data-label="fencing token"]')).to_contain_text(
                str(self.lock.fencing_token))
        finally:
            page.close()

    def test_a_read_only_token_sees_but_may_not_act(self):
        page = self.open_console(READER_TOKEN)
        try:
            page.goto(f"{self.base}/console/#/queue/reports")
            expect(page.locator('.card[data-label="waiting"]')).to_contain_text("1")
            page.click("#pause")
            expect(page.locator("#notice")).to_contain_text("PERMISSION_DENIED")
            expect(page.locator("#notice")).to_contain_text("queue:admin")
            self.assertFalse(self.stats("reports").paused)
        finally:
            page.close()

    def test_a_wrong_token_is_asked_again(self):
        page = self.open_console("not-a-token")
        try:
            expect(page.locator("#page-error")).to_contain_text("UNAUTHENTICATED")
            expect(page.locator("#signin")).to_be_visible()
        finally:
            page.close()


if __name__ == "__main__":
    smoke_test.BINARY = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
