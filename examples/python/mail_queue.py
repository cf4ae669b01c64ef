"""The mail queue story, in Python, against a running Redwire.

Jobs are mails: at most 3 attempts, exponential backoff, at most 3 sends per
second, and a dead-letter list to inspect and redrive. One address always fails.

    python -m grpc_tools.protoc -Iproto -I<grpc_tools>/_proto --python_out=gen \
        --grpc_python_out=gen proto/redwire/v1/*.proto
    PYTHONPATH=gen python examples/python/mail_queue.py localhost:50051
"""

import queue as threadsafe
import sys
import time

import grpc
from google.protobuf import duration_pb2

from redwire.v1 import queue_pb2 as pb
from redwire.v1 import queue_pb2_grpc as rpc

QUEUE = "mail"


def millis(n):
    return duration_pb2.Duration(seconds=n // 1000, nanos=(n % 1000) * 1_000_000)


def send_mail(payload):
    """Stands in for SMTP: mail to nobody@invalid always fails."""
    if b"nobody@invalid" in payload:
        raise RuntimeError("550 mailbox unavailable")


def run(address, mails=5):
    """Enqueues `mails` mails plus one undeliverable, works them off, returns a report."""
    channel = grpc.insecure_channel(address)
    jobs = rpc.QueueStub(channel)
    jobs.SetRateLimit(pb.SetRateLimitRequest(queue=QUEUE, max=3, window=millis(1000)))
    retry = pb.Backoff(exponential=True, delay=millis(100), max_delay=millis(1000), jitter=0.1)
    to = [f"user{i}@example.com" for i in range(mails)] + ["nobody@invalid"]
    jobs.EnqueueBatch(pb.EnqueueBatchRequest(queue=QUEUE, jobs=[
        pb.JobSpec(payload=f"to: {address}".encode(), job_id=f"welcome-{i}",
                   max_attempts=3, backoff=retry, attributes={"template": "welcome"})
        for i, address in enumerate(to)
    ]))

    # A worker on the Consume stream: acks and nacks travel on the same stream.
    outbox = threadsafe.Queue()
    outbox.put(pb.ConsumeRequest(subscribe=pb.Subscribe(queue=QUEUE, max_in_flight=4)))
    requests = iter(outbox.get, None)
    stream = jobs.Consume(requests)
    sent, failures = [], 0
    deadline = time.monotonic() + 30
    for message in stream:
        if message.HasField("delivery"):
            job = message.delivery
            try:
                send_mail(job.payload)
                outbox.put(pb.ConsumeRequest(ack=pb.AckItem(job_id=job.job_id, lease_token=job.lease_token)))
                sent.append(job.job_id)
            except RuntimeError as error:
                failures += 1
                outbox.put(pb.ConsumeRequest(nack=pb.NackItem(
                    job_id=job.job_id, lease_token=job.lease_token, error=str(error))))
        stats = jobs.Stats(pb.StatsRequest(queue=QUEUE))
        if len(sent) == mails and stats.dead == 1 or time.monotonic() > deadline:
            break
    outbox.put(None)
    stream.cancel()

    dead = jobs.ListDead(pb.ListDeadRequest(queue=QUEUE)).jobs
    redriven = jobs.Redrive(pb.RedriveRequest(queue=QUEUE, job_ids=[j.job_id for j in dead])).redriven
    jobs.Purge(pb.PurgeRequest(queue=QUEUE))
    channel.close()
    return {
        "sent": sorted(sent),
        "failed_deliveries": failures,
        "dead": [(j.job_id, list(j.errors)) for j in dead],
        "redriven": redriven,
    }


if __name__ == "__main__":
    report = run(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051")
    for key, value in report.items():
        print(f"{key}: {value}")
