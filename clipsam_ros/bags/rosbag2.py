"""rosbag2 files in and out with `rosbags`: no ROS install needed.

Reading (`Bag`): a rosbag2 directory (sqlite3 or mcap storage), a single
`.mcap` or `.db3` file, or a directory whose recorder died before writing
`metadata.yaml` (its one storage file is read directly). An MCAP file without
its footer or index (a recording cut short) cannot be opened by `rosbags`; it
is then scanned record by record with the `mcap` package, which yields every
complete message before the cut, and `Bag.damage` says what happened. Errors
while messages stream (a corrupt chunk, a malformed sqlite page) surface as
`BagError` from `Bag.messages`, after everything read so far was yielded.

Writing (`BagWriter`): rosbag2 version 9 (Jazzy), mcap storage by default,
with each topic's message definition embedded (MCAP schema records), so
`ros2 bag play` and Foxglove read it without our message packages.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from rosbags.typesys.store import Typestore

from ..errors import ClipsamError, one_line
from ..outputs.vision_msgs_defs import bag_typestore

STORAGE_SUFFIXES = (".mcap", ".db3")


class BagError(ClipsamError, RuntimeError):
    """A bag that cannot be read or written; the message is one line."""


@dataclass
class RawMessage:
    topic: str
    msgtype: str
    log_ns: int       # the recorder's receive time
    data: bytes       # CDR


def _storage_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())


class Bag:
    """One rosbag2 recording opened for reading; use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.damage = ""                       # why the bag can only be partly read
        self.notes: list[str] = []             # what was unusual but harmless
        self.topics: dict[str, str] = {}       # topic -> message type
        self.counts: dict[str, int | None] = {}  # None = unknown (scanned bag)
        self._reader = None                    # rosbags AnyReader
        self._salvage = None                   # an MCAP read record by record instead

    # ------------------------------------------------------------------ opening

    def __enter__(self) -> "Bag":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        path = self.path
        if not path.exists():
            raise BagError(f"bag {path} does not exist (pass a rosbag2 folder, a .mcap or a .db3 file)")
        if path.suffix == ".bag":
            raise BagError(f"bag {path} is a ROS 1 bag; convert it first (rosbags-convert --src {path})")
        target = path
        if path.is_dir() and not (path / "metadata.yaml").exists():
            files = _storage_files(path)
            if len(files) != 1:
                raise BagError(f"bag {path} has no metadata.yaml and {len(files)} storage files "
                               "(.mcap/.db3); expected a rosbag2 folder or one storage file")
            target = files[0]
            self.notes.append(f"{path}/metadata.yaml is missing; read {target.name} directly")
        elif path.is_file() and path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"bag {path} is not a rosbag2 folder, .mcap or .db3 file")
        try:
            self._open_rosbags(target)
        except Exception as exc:  # rosbags raises several types: keep the reason, try the scan
            mcap_file = self._mcap_of(target)
            if mcap_file is None:
                raise BagError(f"bag {path} cannot be read: {one_line(exc, 200)}") from None
            self._open_scan(mcap_file, one_line(exc, 200))

    def _open_rosbags(self, target: Path) -> None:
        from rosbags.highlevel import AnyReader

        reader = AnyReader([target], default_typestore=bag_typestore())
        reader.open()
        self._reader = reader
        for conn in reader.connections:
            self.topics[conn.topic] = conn.msgtype
            self.counts[conn.topic] = (self.counts.get(conn.topic) or 0) + conn.msgcount

    @staticmethod
    def _mcap_of(target: Path) -> Path | None:
        if target.is_file():
            return target if target.suffix == ".mcap" else None
        files = _storage_files(target)
        return files[0] if len(files) == 1 and files[0].suffix == ".mcap" else None

    def _open_scan(self, file: Path, reason: str) -> None:
        from .salvage import McapSalvage

        try:
            salvage = McapSalvage(file)
        except Exception as exc:
            raise BagError(f"bag {self.path} cannot be read: {reason}; "
                           f"as a bare MCAP file: {one_line(exc, 200)}") from None
        if not salvage.topics:
            raise BagError(f"bag {self.path} cannot be read ({reason}) and holds no complete topic record")
        self._salvage = salvage
        self.topics = dict(salvage.topics)
        self.counts = {t: salvage.counts.get(t, 0) for t in salvage.topics}
        what = "truncated" if salvage.end_error else "unindexed"
        self.damage = f"bag {self.path} is {what} (rosbags: {reason.rstrip('.')})"

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # ------------------------------------------------------------------ reading

    def messages(self, topics: Iterable[str]) -> Iterator[RawMessage]:
        """Messages of `topics` in recorded order; `BagError` at the first damage, after the rest."""
        wanted = set(topics)
        count = 0
        try:
            if self._salvage is not None:
                for topic, msgtype, log_ns, data in self._salvage.messages(wanted):
                    count += 1
                    yield RawMessage(topic, msgtype, log_ns, data)
            else:
                conns = [c for c in self._reader.connections if c.topic in wanted]
                for conn, log_ns, data in (self._reader.messages(connections=conns) if conns else ()):
                    count += 1
                    yield RawMessage(conn.topic, conn.msgtype, int(log_ns), bytes(data))
        except GeneratorExit:
            raise
        except Exception as exc:
            if self._salvage is not None:
                raise BagError(f"{self.damage}: read {count} messages before the damage") from None
            raise BagError(f"bag {self.path} is damaged after {count} messages "
                           f"({one_line(exc, 200, with_type=True)})") from None
        if self._salvage is not None:
            raise BagError(f"{self.damage}: read {count} messages, then the data ends")

    def deserialize(self, message: RawMessage):
        """The message object (rosbags dataclass); raises on malformed CDR."""
        if self._reader is not None:
            return self._reader.deserialize(message.data, message.msgtype)
        return self._salvage.typestore.deserialize_cdr(message.data, message.msgtype)


class BagWriter:
    """A new rosbag2 (version 9) with embedded message definitions; use as a context manager."""

    def __init__(self, path: str | Path, typestore: Typestore | None = None, storage: str = "mcap"):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path).expanduser()
        if self.path.exists():
            raise BagError(f"output bag {self.path} exists already; remove it or choose another path")
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"storage {storage!r} is not supported (choose mcap or sqlite3)")
        self.typestore = typestore or bag_typestore()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        self._conns: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def add_topic(self, topic: str, msgtype: str) -> None:
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
            self.counts[topic] = 0

    def write(self, topic: str, log_ns: int, msg) -> None:
        """Serialize `msg` (a typestore dataclass) onto `topic`."""
        self.add_topic(topic, msg.__msgtype__)
        self.write_raw(topic, log_ns, self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def write_raw(self, topic: str, log_ns: int, data: bytes) -> None:
        """Copy already serialized CDR onto a topic added with `add_topic`."""
        self._writer.write(self._conns[topic], int(log_ns), data)
        self.counts[topic] += 1
