"""Polyglot smoke test: a Python client generated from proto/ with grpcio-tools
talks to a real `redwire` binary (running its embedded redis-server).

Usage: smoke_test.py PATH_TO_REDWIRE_BINARY
"""

import importlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest


import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = None


def generate_stubs(out_dir):
    """Compiles proto/redwire/v1/*.proto into Python modules in out_dir."""
    well_known = str(pathlib.Path(protoc.__file__).parent / "_proto")
    protos = sorted(str(p) for p in (ROOT / "proto" / "redwire" / "v1").glob("*.proto"))
    status = protoc.main(
        ["grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with {status}")
    sys.path.insert(0, out_dir)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_dir, addr, log, *extra):
    """Starts the redwire binary on addr with its embedded redis in tmp_dir/data
    (the admin listener off unless extra names one)."""
    admin = [] if "--admin-listen" in extra else ["--admin-listen", "off"]
    return subprocess.Popen(
        [BINARY, "--listen", addr, "--data-dir", os.path.join(tmp_dir, "data"),
         "--health-interval", "100ms", *admin, *extra],
        stdout=log, stderr=subprocess.STDOUT,
    )


def wait_until_serving(channel, proc, log):
    """Polls health until SERVING; fails with the server's log if it never is."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return health
        except grpc.RpcError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            raise RuntimeError("redwire did not become SERVING:\n" + open(log.name).read())
        time.sleep(0.05)


class RedwireSmokeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="rw-py-")
        generate_stubs(cls.tmp.name)
        cls.pb = importlib.import_module("redwire.v1.cache_pb2")
        cls.grpc_pb = importlib.import_module("redwire.v1.cache_pb2_grpc")
        sys.path.insert(0, str(ROOT / "examples" / "python"))
        cls.addr = f"127.0.0.1:{free_port()}"
        cls.log = open(os.path.join(cls.tmp.name, "redwire.log"), "w")
        cls.proc = launch(cls.tmp.name, cls.addr, cls.log)
        cls.channel = grpc.insecure_channel(cls.addr)
        cls.cache = cls.grpc_pb.CacheStub(cls.channel)
        cls.health = wait_until_serving(cls.channel, cls.proc, cls.log)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.proc.send_signal(signal.SIGTERM)
        try:
            code = cls.proc.wait(timeout=20)
        finally:
            if cls.proc.poll() is None:
                cls.proc.kill()
            cls.log.close()
            cls.tmp.cleanup()
        assert code == 0, f"redwire exited with {code} after SIGTERM"

    def test_set_then_get(self):
        written = self.cache.Set(self.pb.SetRequest(key="py:greeting", value=b"hello from python"))
        self.assertTrue(written.written)
        reply = self.cache.Get(self.pb.GetRequest(key="py:greeting"))
        self.assertTrue(reply.found)
        self.assertEqual(reply.value, b"hello from python")

    def test_health_reports_the_cache_service(self):
        reply = self.health.Check(health_pb2.HealthCheckRequest(service="redwire.v1.Cache"))
        self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)

    def test_text_logs_on_a_pipe_are_plain(self):
        """stderr is a file here: no colour codes, and values print as values."""
        with open(self.log.name) as log:
            text = log.read()
        self.assertIn(f"addr={self.addr}", text)
        self.assertNotIn("\x1b[", text)
        self.assertNotIn("Some(", text)

    def test_bad_input_names_the_field(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.cache.Set(self.pb.SetRequest(key="", value=b"x"))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(caught.exception.details().startswith("key:"), caught.exception.details())

    def test_producer_stream(self):
        """Queue.EnqueueStream fed by a Python generator: one reply per job, in order;
        a bad job fails alone; the queue holds the others in the order sent."""
        queue_pb = importlib.import_module("redwire.v1.queue_pb2")
        queue_grpc = importlib.import_module("redwire.v1.queue_pb2_grpc")
        stub = queue_grpc.QueueStub(self.channel)
        requests = [
            queue_pb.EnqueueStreamRequest(queue="py-produced", job=queue_pb.JobSpec(payload=f"job {i}".encode()))
            for i in range(20)
        ]
        requests[7].queue = "not a queue name"
        replies = list(stub.EnqueueStream(iter(requests), timeout=10))
        self.assertEqual(len(replies), 20)
        self.assertEqual(replies[7].WhichOneof("result"), "failed")
        self.assertEqual(replies[7].failed.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertTrue(replies[7].failed.message.startswith("queue:"), replies[7].failed.message)
        others = [r for i, r in enumerate(replies) if i != 7]
        self.assertTrue(all(r.WhichOneof("result") == "enqueued" for r in others))
        taken = stub.Dequeue(queue_pb.DequeueRequest(queue="py-produced", max_jobs=100), timeout=10)
        self.assertEqual([j.payload for j in taken.jobs],
                         [r.job.payload for i, r in enumerate(requests) if i != 7])

    def test_mail_queue_example(self):
        """examples/python/mail_queue.py: retries, dead letter and redrive."""
        mail_queue = importlib.import_module("mail_queue")
        report = mail_queue.run(self.addr, mails=5)
        self.assertEqual(len(report["sent"]), 5)
        self.assertEqual(report["failed_deliveries"], 3, "3 attempts, then dead")
        [(job_id, errors)] = report["dead"]
        self.assertEqual(job_id, "welcome-5")
        self.assertEqual(errors, ["550 mailbox unavailable"] * 3)
        self.assertEqual(report["redriven"], 1)

    def test_notifications_example(self):
        """examples/python/notifications.py: topic patterns matched exactly."""
        notifications = importlib.import_module("notifications")
        self.assertEqual(notifications.run(self.addr), [
            ("order.#", "order.created.us", "#1001"),
            ("order.#", "order.paid.eu", "#1002"),
            ("order.*.us", "order.created.us", "#1001"),
        ])
    def test_order_events_example(self):
        """examples/python/order_events.py: a group consumer on ReadGroup."""
        order_events = importlib.import_module("order_events")
        report = order_events.run(self.addr)
        self.assertEqual(report["billed"], [f"#{1000 + i}" for i in range(5)])
        self.assertEqual(report["total"], 150)
        self.assertEqual(report["groups"], [("billing", 3)])
        self.assertEqual(report["dead_letter_stream"], "orders-demo:dead")

    def test_leader_election_example(self):
        """examples/python/leader_election.py: Hold hands over with a higher fence."""
        leader_election = importlib.import_module("leader_election")
        report = leader_election.run(self.addr)
        first, second = report["leaders"]
        self.assertGreater(second, first)
        self.assertEqual(report["seat"], (True, False))


class SecureClientTest(unittest.TestCase):
    """A Python client over TLS with a bearer token, written as the README's
    "Security" section shows it, against certificates from scripts/dev-certs."""

    @classmethod
    def setUpClass(cls):
        cls.stubs = tempfile.TemporaryDirectory(prefix="rw-py-tls-")
        generate_stubs(cls.stubs.name)

    @classmethod
    def tearDownClass(cls):
        cls.stubs.cleanup()

    def test_tls_and_a_token(self):
        cache_pb = importlib.import_module("redwire.v1.cache_pb2")
        cache_grpc = importlib.import_module("redwire.v1.cache_pb2_grpc")
        with tempfile.TemporaryDirectory(prefix="rw-tls-") as tmp:
            certs = os.path.join(tmp, "certs")
            subprocess.run([str(ROOT / "scripts" / "dev-certs"), certs], check=True,
                           stdout=subprocess.DEVNULL)
            minted = subprocess.run([BINARY, "mint-token", "--name", "py", "--services", "cache"],
                                    check=True, capture_output=True, text=True).stdout
            token = minted.splitlines()[0].removeprefix("# token: ")
            auth_file = os.path.join(tmp, "auth.toml")
            with open(auth_file, "w") as f:
                f.write(minted)
            addr = f"127.0.0.1:{free_port()}"
            with open(os.path.join(tmp, "redwire.log"), "w") as log:
                proc = launch(tmp, addr, log, "--auth-file", auth_file,
                              "--tls-cert", os.path.join(certs, "server.pem"),
                              "--tls-key", os.path.join(certs, "server-key.pem"))
                try:
                    # As in the README: trust the CA, send the token with every call.
                    with open(os.path.join(certs, "ca.pem"), "rb") as ca:
                        tls = grpc.ssl_channel_credentials(root_certificates=ca.read())
                    token_creds = grpc.access_token_call_credentials(token)
                    creds = grpc.composite_channel_credentials(tls, token_creds)
                    channel = grpc.secure_channel(
                        addr, creds, options=[("grpc.ssl_target_name_override", "localhost")])
                    wait_until_serving(channel, proc, log)
                    cache = cache_grpc.CacheStub(channel)
                    cache.Set(cache_pb.SetRequest(key="py:tls", value=b"sealed"))
                    self.assertEqual(cache.Get(cache_pb.GetRequest(key="py:tls")).value, b"sealed")

                    anonymous = grpc.secure_channel(
                        addr, tls, options=[("grpc.ssl_target_name_override", "localhost")])
                    with self.assertRaises(grpc.RpcError) as caught:
                        cache_grpc.CacheStub(anonymous).Get(cache_pb.GetRequest(key="py:tls"))
                    self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                    anonymous.close()
                    channel.close()
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=20)


def start_nginx(tmp_dir, locations, listen_options=""):
    """nginx in the foreground with its files under tmp_dir, on a free loopback
    port, proxying as `locations` (nginx location blocks) say, as an
    operator's proxy would. Returns the process and its port."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf_dir = tempfile.mkdtemp(prefix="rw-nginx-", dir=tmp_dir)
    os.chmod(conf_dir, 0o755)
    conf = os.path.join(conf_dir, "nginx.conf")
    with open(conf, "w") as out:
        out.write(f"""
daemon off;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{}}
http {{
  access_log off;
  client_body_temp_path {conf_dir}/body;
  proxy_temp_path {conf_dir}/proxy;
  fastcgi_temp_path {conf_dir}/fastcgi;
  uwsgi_temp_path {conf_dir}/uwsgi;
  scgi_temp_path {conf_dir}/scgi;
  server {{
    listen 127.0.0.1:{port}{listen_options};
    {locations}
  }}
}}
""")
    proc = subprocess.Popen([nginx, "-c", conf, "-p", conf_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, port


def unique_keys(pairs):
    """json.loads hook that refuses an object with a key twice."""
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise ValueError(f"duplicate keys {duplicated}")
    return dict(pairs)


class JsonLogTest(unittest.TestCase):
    """--log-format json: every line is one JSON object with each key once, as a
    log shipper needs, and each call has one line with method, code, reason,
    peer, duration and error as fields."""

    def test_every_line_is_json_with_unique_keys(self):
        with tempfile.TemporaryDirectory(prefix="rw-json-") as tmp:
            generate_stubs(tmp)
            pb = importlib.import_module("redwire.v1.cache_pb2")
            grpc_pb = importlib.import_module("redwire.v1.cache_pb2_grpc")
            addr = f"127.0.0.1:{free_port()}"
            with open(os.path.join(tmp, "redwire.log"), "w") as log:
                proc = launch(tmp, addr, log, "--log-format", "json", "--log", "debug")
                try:
                    with grpc.insecure_channel(addr) as channel:
                        wait_until_serving(channel, proc, log)
                        with self.assertRaises(grpc.RpcError):
                            grpc_pb.CacheStub(channel).Set(pb.SetRequest(key="", value=b"x"))
                finally:
                    proc.send_signal(signal.SIGTERM)
                    self.assertEqual(proc.wait(timeout=20), 0)
            with open(log.name) as written:
                lines = [line for line in written.read().splitlines() if line.strip()]
        self.assertTrue(lines)
        events = [json.loads(line, object_pairs_hook=unique_keys) for line in lines]
        rejected = [e["fields"] for e in events
                    if e.get("fields", {}).get("message") == "request rejected"]
        self.assertEqual(len(rejected), 1, lines)
        self.assertEqual(rejected[0]["code"], "INVALID_ARGUMENT")
        self.assertEqual(rejected[0]["reason"], "INVALID_ARGUMENT")
        self.assertEqual(rejected[0]["method"], "/redwire.v1.Cache/Set")
        self.assertTrue(rejected[0]["peer"].startswith("127.0.0.1:"), rejected[0])
        self.assertGreater(rejected[0]["duration_ms"], 0)
        self.assertTrue(rejected[0]["error"].startswith("key:"), rejected[0])
        # Every call gets its line, successful ones too (the health checks).
        answered = [e["fields"] for e in events
                    if e.get("fields", {}).get("message") == "request"]
        self.assertIn(("/grpc.health.v1.Health/Check", "OK"),
                      [(e["method"], e["code"]) for e in answered], lines)
        listening = [e["fields"] for e in events
                     if e.get("fields", {}).get("message") == "redwire listening"]
        self.assertEqual(listening[0]["addr"], addr)


def rss_mib(pid):
    """The resident set size of process pid, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class SlowSubscriberMemoryTest(unittest.TestCase):
    """Subscribers that stop reading (real grpcio clients) cost the server a bounded
    amount each, whatever is published: their --pubsub-buffer-bytes buffer (1 MiB)
    plus HTTP/2's send buffer, about 2 MiB measured; not what was published."""

    SUBSCRIBERS = 20
    MESSAGES = 3000
    PAYLOAD = b"x" * 10240  # 30 MB in all, to each subscriber
    BOUND_MIB = 4  # per stalled subscriber; measured about 2

    def test_subscribers_that_never_read_hold_bounded_memory(self):
        with tempfile.TemporaryDirectory(prefix="rw-mem-") as tmp:
            generate_stubs(tmp)
            pb = importlib.import_module("redwire.v1.pubsub_pb2")
            grpc_pb = importlib.import_module("redwire.v1.pubsub_pb2_grpc")
            addr = f"127.0.0.1:{free_port()}"
            with open(os.path.join(tmp, "redwire.log"), "w") as log:
                proc = launch(tmp, addr, log, "--log", "warn")
                channels = []
                try:
                    with grpc.insecure_channel(addr) as channel:
                        wait_until_serving(channel, proc, log)
                        request = pb.SubscribeRequest(channels=["firehose"])
                        stalled = []
                        for _ in range(self.SUBSCRIBERS):
                            own = grpc.insecure_channel(addr)
                            channels.append(own)
                            events = grpc_pb.PubSubStub(own).Subscribe(request)
                            next(events)  # subscribed; never read again
                            stalled.append(events)
                        reader = grpc_pb.PubSubStub(channel).Subscribe(request)
                        next(reader)
                        before = rss_mib(proc.pid)
                        publisher = grpc_pb.PubSubStub(channel)
                        for _ in range(self.MESSAGES):
                            publisher.Publish(pb.PublishRequest(channel="firehose", payload=self.PAYLOAD))
                        publisher.Publish(pb.PublishRequest(channel="firehose", payload=b"last"))
                        # The hub hands every message to every subscriber in order: once
                        # the reading one has the last, the stalled ones were offered all.
                        for event in reader:
                            if event.HasField("message") and event.message.payload == b"last":
                                break
                        grown = rss_mib(proc.pid) - before
                        for events in stalled:
                            events.cancel()
                        reader.cancel()
                finally:
                    for own in channels:
                        own.close()
                    proc.send_signal(signal.SIGTERM)
                    self.assertEqual(proc.wait(timeout=20), 0)
        published_mib = self.MESSAGES * len(self.PAYLOAD) / 2**20
        self.assertLess(
            grown, self.SUBSCRIBERS * self.BOUND_MIB,
            f"{self.SUBSCRIBERS} stalled subscribers grew RSS by {grown:.1f} MiB "
            f"after {published_mib:.0f} MiB published to each")


if __name__ == "__main__":
    BINARY = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
