"""rosbag2 files without a ROS install: read and write them with `rosbags`, messages as rclpy objects.

`rosbags` parses the bag containers (sqlite3 and mcap) and their metadata; message payloads stay
CDR bytes and are turned into the rclpy classes with ``rclpy.serialization``, so everything after
this module sees the very message objects a live subscription would deliver.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from vseg_ros.mcap_crc import ChunkCrcError, fill_chunk_crcs, verify_chunk_crcs

__all__ = [
    "BagError", "BagTopic", "BagWriter", "bag_custom_data", "list_topics", "message_class", "read_messages",
    "ros_type_name",
]  # fmt: skip

_STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagError(ValueError):
    """A bag that cannot be read or written as asked; the message names the bag and what is wrong."""


@dataclass(frozen=True)
class BagTopic:
    name: str
    msgtype: str  # e.g. "sensor_msgs/msg/Image"
    count: int


def ros_type_name(msg_class: type) -> str:
    """'sensor_msgs/msg/Image' for rclpy's sensor_msgs.msg.Image."""
    package = msg_class.__module__.split(".")[0]
    return f"{package}/msg/{msg_class.__name__}"


def message_class(msgtype: str) -> type:
    """The rclpy class of 'pkg/msg/Name' (the package's Python messages must be importable)."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise BagError(f"message type {msgtype!r} is not of the form package/msg/Name")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError):
        raise BagError(f"message type {msgtype} is not installed here (no Python module {parts[0]}.msg)") from None


# mcap files whose chunk CRCs this process checked, as (path, size, mtime): one evaluation opens a
# bag several times (topics, first frame, frames, copy), and each check reads the whole file.
_CRC_CHECKED: set[tuple[str, int, int]] = set()


def _open(path: Path, *, check_data: bool = True) -> Reader:
    """check_data: verify the mcap chunk CRCs first (reads every byte once per process); off for
    readers of the metadata only."""
    if not path.exists():
        raise BagError(f"no bag at {path}")
    for mcap in sorted(path.glob("*.mcap")) if check_data else ():
        stat = mcap.stat()
        key = (str(mcap.resolve()), stat.st_size, stat.st_mtime_ns)  # a file changed since is checked again
        if key in _CRC_CHECKED:
            continue
        try:
            verify_chunk_crcs(mcap)
        except ChunkCrcError as exc:
            raise BagError(f"cannot read bag {path}: {exc}") from None
        _CRC_CHECKED.add(key)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for broken metadata and storage
        # rosbags' messages can run over several lines (a YAML parser's context): the first says it.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        raise BagError(f"cannot read bag {path}: {type(exc).__name__}: {first.rstrip(':')}") from None
    return reader


def list_topics(path: str | Path, *, check_data: bool = True) -> list[BagTopic]:
    """Topics, types and message counts from the bag's metadata (``check_data``: see ``_open``)."""
    reader = _open(Path(path), check_data=check_data)
    try:
        counts: dict[tuple[str, str], int] = {}
        for c in reader.connections:
            counts[(c.topic, c.msgtype)] = counts.get((c.topic, c.msgtype), 0) + c.msgcount
        return [BagTopic(t, m, n) for (t, m), n in sorted(counts.items())]
    finally:
        reader.close()


def bag_custom_data(path: str | Path) -> dict[str, str]:
    """The bag's ``custom_data`` (metadata.yaml, rosbag2 version 6 and later; {} when it has none)."""
    reader = _open(Path(path), check_data=False)
    try:
        return dict(reader.storage.metadata.custom or {})
    finally:
        reader.close()


def read_messages(path: str | Path, topics: Mapping[str, type | tuple[type, ...]]) -> Iterator[tuple[str, int, Any]]:
    """Yield (topic, receive time in ns, rclpy message) for ``topics`` in bag order.

    ``topics`` maps each wanted topic to its rclpy class (or a tuple of accepted classes). A missing
    topic or a topic of another type raises :class:`BagError` listing what the bag has; a truncated
    bag raises it with the number of messages read so far.
    """
    path = Path(path)
    reader = _open(path)
    try:
        available = {(c.topic, c.msgtype) for c in reader.connections}
        have = ", ".join(f"{t} [{m}]" for t, m in sorted(available)) or "none"
        classes: dict[str, dict[str, type]] = {}
        for topic, accepted in topics.items():
            by_name = {ros_type_name(cls): cls for cls in (accepted if isinstance(accepted, tuple) else (accepted,))}
            found = {m for t, m in available if t == topic}
            if not found:
                raise BagError(f"bag {path} has no topic {topic}; its topics: {have}")
            if not found & by_name.keys():
                raise BagError(
                    f"topic {topic} in bag {path} carries {', '.join(sorted(found))}, expected {', '.join(by_name)}"
                )
            classes[topic] = by_name
        connections = [c for c in reader.connections if c.topic in classes and c.msgtype in classes[c.topic]]
        count = 0
        try:
            for connection, timestamp, raw in reader.messages(connections=connections):
                msg = deserialize_message(raw, classes[connection.topic][connection.msgtype])
                count += 1
                yield connection.topic, timestamp, msg
        except BagError:
            raise
        except Exception as exc:
            raise BagError(f"bag {path} is damaged after {count} messages: {type(exc).__name__}: {exc}") from None
    finally:
        reader.close()


def _find_interface_definition(msgtype: str) -> str:
    """Text of a .msg file of this package (installed under <prefix>/share/vseg/msg)."""
    package, _, name = msgtype.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        candidate = Path(prefix) / "share" / package / "msg" / f"{name}.msg"
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise BagError(f"no definition of {msgtype} under {', '.join(prefixes)}; is the vseg package installed?")


class BagWriter:
    """Write rclpy messages into a new rosbag2 directory (mcap by default).

    >>> with BagWriter(path) as bag:
    ...     bag.write("/camera/image_raw", stamp_ns, image_msg)
    """

    def __init__(
        self, path: str | Path, *, storage: str = "mcap", custom_data: Mapping[str, str] | None = None
    ) -> None:
        if storage not in _STORAGES:
            raise BagError(f"storage must be one of {', '.join(_STORAGES)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already; rosbag2 writes a new directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # like `ros2 bag record -o a/b`
        except OSError as exc:
            raise BagError(f"cannot create the folder {self.path.parent} for the bag: {exc}") from None
        self._typestore = get_typestore(Stores.ROS2_JAZZY)
        self._writer = Writer(self.path, version=9, storage_plugin=_STORAGES[storage])
        for key, value in (custom_data or {}).items():  # metadata.yaml's custom_data: strings only
            self._writer.set_custom_data(key, value)
        self._connections: dict[str, Connection] = {}
        self._types: dict[str, type] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._writer.close()
        for mcap in self.path.glob("*.mcap"):  # rosbags leaves chunk CRCs at 0 ("not computed")
            fill_chunk_crcs(mcap)

    def _connection(self, topic: str, msg_class: type) -> Connection:
        msgtype = ros_type_name(msg_class)
        if topic in self._connections:
            if self._types[topic] is not msg_class:
                raise BagError(f"topic {topic} already carries {ros_type_name(self._types[topic])}, not {msgtype}")
            return self._connections[topic]
        if msgtype not in self._typestore.types:
            self._typestore.register(get_types_from_msg(_find_interface_definition(msgtype), msgtype))
        connection = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
        self._connections[topic], self._types[topic] = connection, msg_class
        return connection

    def write(self, topic: str, time_ns: int, msg: Any) -> None:
        self._writer.write(self._connection(topic, type(msg)), time_ns, serialize_message(msg))
