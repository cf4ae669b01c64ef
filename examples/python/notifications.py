"""The notification story, in Python, against a running Redwire.

A notification service listens to order events with topic patterns; an order
service publishes them. Pub/sub is fire-and-forget: only live subscribers get them.

    PYTHONPATH=gen python examples/python/notifications.py localhost:50051
"""

import sys
import threading

import grpc

from redwire.v1 import pubsub_pb2 as pb
from redwire.v1 import pubsub_pb2_grpc as rpc


def run(address):
    """Subscribes to `order.*.us` and `order.#`, publishes three events, returns
    what the subscriber saw as sorted (topic, channel, payload) tuples: the US
    order matches both patterns, the EU order one, the invoice none."""
    channel = grpc.insecure_channel(address)
    pubsub = rpc.PubSubStub(channel)
    stream = pubsub.Subscribe(pb.SubscribeRequest(topics=["order.*.us", "order.#"]))
    events = iter(stream)
    first = next(events)
    assert first.HasField("subscribed"), first  # live in Redis: safe to publish now

    seen = []
    done = threading.Event()

    def listen():
        for event in events:
            if event.HasField("message"):
                m = event.message
                seen.append((m.topic, m.channel, m.payload.decode()))
            elif event.HasField("gap"):
                seen.append(("gap", event.gap.reason, str(event.gap.dropped)))
            if len(seen) == 3:
                done.set()
                return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    for name, body in [("order.created.us", "#1001"), ("order.paid.eu", "#1002"), ("invoice.sent", "#1003")]:
        pubsub.Publish(pb.PublishRequest(channel=name, payload=body.encode()))
    done.wait(timeout=10)
    stream.cancel()
    channel.close()
    return sorted(seen)


if __name__ == "__main__":
    for event in run(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"):
        print(event)
