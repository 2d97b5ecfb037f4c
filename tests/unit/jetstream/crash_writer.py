"""Child process for test_crash.py: applies publish batches to a SQLite stream store forever.

After each batch commits it prints `ack <seq>` for every publish in it (then flushes), so every
printed sequence was durable before the parent saw it. Every 7th sequence is deleted in the same
batch that published it. Usage: python crash_writer.py <db path> <batch size> <max batches>
"""

from __future__ import annotations

import sys

from jetstream.config import StreamConfig
from jetstream.store import SqliteStore
from jetstream.stream import DeleteMsg, PubAck, Publish, StreamStateMachine


def main(path: str, batch_size: int, max_batches: int) -> None:
    store = SqliteStore(path)
    machine = StreamStateMachine(StreamConfig.from_json({"name": "CRASH", "subjects": ["crash.>"]}), store)
    index = store.applied_index()
    for _ in range(max_batches):
        acked = []
        with store.batch():
            for _ in range(batch_size):
                index += 1
                result = machine.apply(Publish(f"crash.{index % 5}", b"x" * 64, index), index)
                assert isinstance(result, PubAck), result
                acked.append(result.seq)
                if result.seq % 7 == 0:
                    index += 1
                    machine.apply(DeleteMsg(result.seq), index)
        sys.stdout.write("".join(f"ack {seq}\n" for seq in acked))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
