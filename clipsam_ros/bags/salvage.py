"""Read what is left of an MCAP recording that was cut short (no footer, no index).

`rosbags` needs an MCAP file's footer and summary; a recorder that died (power,
disk full, SIGKILL) leaves neither. The `mcap` package's `StreamReader` reads
records front to back and only ever yields complete ones, so every message
before the cut is recovered. Message types come from the file's own schema
records, as `rosbags` does for intact bags.

(A damaged sqlite3 `.db3` is not salvaged: SQLite refuses the whole file.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from ..outputs.vision_msgs_defs import bag_typestore

_IDL_SEP = "=" * 80 + "\n"


class McapSalvage:
    """An unindexed MCAP file, read record by record."""

    def __init__(self, file: Path):
        self.file = file
        self.topics: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.end_error = ""        # what stopped the first pass: the damage
        schemas: dict[int, object] = {}
        channels: dict[int, str] = {}
        try:
            for record in self._records():
                self._learn(record, schemas, channels)
                if type(record).__name__ == "Message" and record.channel_id in channels:
                    topic = channels[record.channel_id]
                    self.counts[topic] = self.counts.get(topic, 0) + 1
        except Exception as exc:  # the cut: any parse error of the last, partial record
            self.end_error = type(exc).__name__
        self.typestore = self._store_from(schemas)

    def _records(self) -> Iterator[object]:
        from mcap.stream_reader import StreamReader

        with open(self.file, "rb") as handle:
            yield from StreamReader(handle).records

    def _learn(self, record, schemas: dict, channels: dict) -> None:
        kind = type(record).__name__
        if kind == "Schema":
            schemas[record.id] = record
        elif kind == "Channel" and record.schema_id in schemas:
            channels[record.id] = record.topic
            self.topics[record.topic] = schemas[record.schema_id].name

    def messages(self, wanted: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log_ns, data) in file order; raises at the damage."""
        schemas: dict[int, object] = {}
        channels: dict[int, str] = {}
        for record in self._records():
            self._learn(record, schemas, channels)
            if type(record).__name__ == "Message":
                topic = channels.get(record.channel_id)
                if topic in wanted:
                    yield topic, self.topics[topic], int(record.log_time), bytes(record.data)

    @staticmethod
    def _store_from(schemas: dict) -> Typestore:
        types = {}
        for schema in schemas.values():
            text = schema.data.decode("utf-8", "replace")
            if schema.encoding == "ros2msg":
                types.update(get_types_from_msg(text, schema.name))
            elif schema.encoding == "ros2idl":
                parts = text.split(_IDL_SEP)[1:] if text.startswith(_IDL_SEP) else [text]
                for part in parts:
                    types.update(get_types_from_idl(part.split("\n", 1)[1] if part.startswith("IDL: ") else part))
        if not types:
            return bag_typestore()
        store = get_typestore(Stores.EMPTY)
        store.register(types)
        return store
