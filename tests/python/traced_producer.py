"""A traced producer in Python, for the trace test (tests/traces.rs): enqueues one
job on each queue named on the command line, each call carrying the W3C
`traceparent` of one span of a new trace, as an instrumented Python client would.

Usage: traced_producer.py ADDR QUEUE...
Prints one JSON object: {"trace_id", "span_id", "job_ids": {queue: id}}.
"""

import importlib
import json
import pathlib
import secrets
import sys
import tempfile

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from smoke_test import generate_stubs  # noqa: E402


def main(addr, queues):
    with tempfile.TemporaryDirectory(prefix="rw-py-trace-") as out:
        generate_stubs(out)
        queue_pb = importlib.import_module("redwire.v1.queue_pb2")
        queue_grpc = importlib.import_module("redwire.v1.queue_pb2_grpc")
        trace_id = secrets.token_hex(16)
        span_id = secrets.token_hex(8)
        traceparent = f"00-{trace_id}-{span_id}-01"
        with grpc.insecure_channel(addr) as channel:
            stub = queue_grpc.QueueStub(channel)
            job_ids = {}
            for queue in queues:
                reply = stub.Enqueue(
                    queue_pb.EnqueueRequest(queue=queue, job=queue_pb.JobSpec(payload=b"traced")),
                    metadata=[("traceparent", traceparent), ("tracestate", "py=1")],
                    timeout=10,
                )
                job_ids[queue] = reply.job_id
        print(json.dumps({"trace_id": trace_id, "span_id": span_id, "job_ids": job_ids}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
