"""Group a py-spy raw profile of the gateway (``py-spy record -f raw``) by who does the work.

Usage: python bench/gateway/profile_groups.py PROFILE.raw

Each sample goes to the first group one of its frames matches, in the order below: aiokafka's
producer first, then the batching writer, then the gateway's own code and the HTTP layer; the
rest is the event loop's own work (uvloop, the socket reads). Prints each group's share of the
samples: how docs/benchmarks.md splits the Kafka write's cost (issue 16).
"""

from __future__ import annotations

import collections
import sys

GROUPS = (
    ("aiokafka's sender (requests, responses, the connection)",
     ("Sender.", "SendProduceReqHandler", "AIOKafkaClient.send", "AIOKafkaConnection")),
    ("aiokafka's accumulator and batches",
     ("MessageAccumulator", "AIOKafkaProducer", "BatchBuilder", "MessageBatch")),
    ("the batching writer's rounds",
     ("BatchingKafkaWriter._write_rounds", "BatchingKafkaWriter._send_round",
      "BatchingKafkaWriter._submit", "_answer (streams/kafka")),
    ("the batching writer's submit", ("BatchingKafkaWriter.submit",)),
    ("the gateway's answer to an acknowledgement", ("Gateway._acknowledged",)),
    ("the gateway's webhook handling", ("Gateway._receive", "Gateway.handle")),
    ("the HTTP layer", ("Connection.",)),
)  # fmt: skip


def main(path: str) -> None:
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as raw:
        for line in raw:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            frames = stack.split(";")
            group = next(
                (name for name, marks in GROUPS if any(m in f for f in frames for m in marks)),
                "the event loop and the rest",
            )
            shares[group] += int(count)
    print(f"{total} samples")
    for group, samples in shares.most_common():
        print(f"{100 * samples / total:5.1f} % {group}")


if __name__ == "__main__":
    main(sys.argv[1])
