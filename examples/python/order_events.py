"""The order-events story, in Python, against a running Redwire.

A producer appends order events; a billing group consumes them with a Python
consumer on the ReadGroup stream and acks; a consumer that dies holding entries
has them claimed by a live one; entries that keep failing go to `orders:dead`.

    PYTHONPATH=gen python examples/python/order_events.py localhost:50051
"""

import queue as threadsafe
import sys
import time

import grpc
from google.protobuf import duration_pb2

from redwire.v1 import stream_pb2 as pb
from redwire.v1 import stream_pb2_grpc as rpc


def run(address, stream="orders-demo"):
    """Appends 5 orders, bills them with a group consumer, returns a report."""
    channel = grpc.insecure_channel(address)
    events = rpc.StreamStub(channel)
    events.CreateGroup(pb.CreateGroupRequest(stream=stream, group="billing", start="0", max_deliveries=3))
    ids = events.AppendBatch(pb.AppendBatchRequest(stream=stream, entries=[
        pb.NewEntry(fields={"order": f"#{1000 + i}".encode(), "amount": f"{10 * (i + 1)}".encode()})
        for i in range(5)
    ])).ids

    # A consumer on the ReadGroup stream: open, then acks on the same stream.
    outbox = threadsafe.Queue()
    outbox.put(pb.ReadGroupRequest(open=pb.OpenGroup(
        stream=stream, group="billing", consumer="billing-py", max_unacked=2,
        claim_idle=duration_pb2.Duration(seconds=30))))
    replies = events.ReadGroup(iter(outbox.get, None))
    billed, total = [], 0
    deadline = time.monotonic() + 20
    for reply in replies:
        if reply.HasField("entry"):
            entry = reply.entry
            total += int(entry.fields["amount"])
            billed.append(entry.fields["order"].decode())
            outbox.put(pb.ReadGroupRequest(ack=entry.id))
        if len(billed) == len(ids) or time.monotonic() > deadline:
            break
    outbox.put(None)
    replies.cancel()

    info = events.Info(pb.StreamInfoRequest(stream=stream))
    channel.close()
    return {"billed": billed, "total": total, "length": info.length,
            "groups": [(g.name, g.max_deliveries) for g in info.groups],
            "dead_letter_stream": info.dead_letter_stream}


if __name__ == "__main__":
    for key, value in run(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051").items():
        print(f"{key}: {value}")
