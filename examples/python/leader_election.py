"""Leader election and a first-come reservation, in Python, against a running Redwire.

Two candidates call Lock.Hold on the same resource: one is granted and stays
leader while its stream is open; when it steps down (closes the stream) the other
is granted at once, with a higher fencing token. The fencing token is what the
protected resource must check: it refuses writes carrying a smaller one.

    PYTHONPATH=gen python examples/python/leader_election.py localhost:50051
"""

import sys
import threading

import grpc
from google.protobuf import duration_pb2

from redwire.v1 import lock_pb2 as pb
from redwire.v1 import lock_pb2_grpc as rpc


def millis(n):
    return duration_pb2.Duration(seconds=n // 1000, nanos=(n % 1000) * 1_000_000)


def run(address, resource="demo-leader"):
    """Returns the fencing tokens of the first and the second leader."""
    channel = grpc.insecure_channel(address)
    locks = rpc.LockStub(channel)

    first = locks.Hold(pb.HoldRequest(resource=resource, ttl=millis(3000)))
    first_token = next(first).granted.fencing_token  # we lead

    second_granted = threading.Event()
    second_token = []

    def candidate():
        stream = locks.Hold(pb.HoldRequest(resource=resource, ttl=millis(3000)))
        for event in stream:
            if event.HasField("granted"):
                second_token.append(event.granted.fencing_token)
                second_granted.set()
                stream.cancel()
                return

    threading.Thread(target=candidate, daemon=True).start()
    first.cancel()  # step down: the lock is released at once
    second_granted.wait(timeout=10)

    # First-come reservation: try once, no waiting; the loser is told at once.
    seat = locks.Acquire(pb.AcquireRequest(resource="seat-12A", ttl=millis(60000), lease_id="user-7"))
    loser = locks.Acquire(pb.AcquireRequest(resource="seat-12A", ttl=millis(60000), lease_id="user-9"))
    locks.Release(pb.ReleaseRequest(resource="seat-12A", token=seat.token))
    channel.close()
    return {"leaders": [first_token] + second_token, "seat": (seat.acquired, loser.acquired)}


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"))
