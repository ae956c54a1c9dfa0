"""Chunk CRCs of MCAP files: written after a bag is closed, verified before one is read.

rosbags writes every chunk with CRC 0, which MCAP defines as "not computed": a flipped byte inside a
chunk then reads back as a slightly different image and nobody notices. :func:`fill_chunk_crcs`
computes the CRC-32 of each uncompressed chunk's records and writes it into the chunk's header in
place; :func:`verify_chunk_crcs` checks every chunk that has one and names the first that fails by
its byte offset. Chunks compressed by other writers are left to the reader's own check.

MCAP layout (https://mcap.dev/spec): magic, then records of opcode (1 byte), content length (uint64
little-endian) and content. A Chunk (opcode 0x06) holds message_start_time, message_end_time,
uncompressed_size (uint64 each), uncompressed_crc (uint32), compression (uint32 length + string) and
records (uint64 length + bytes).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChunkCrcError", "fill_chunk_crcs", "verify_chunk_crcs"]

_MAGIC = b"\x89MCAP0\r\n"
_OP_CHUNK, _OP_FOOTER = 0x06, 0x02
_CRC_AT = 24  # offset of uncompressed_crc inside a chunk's content


class ChunkCrcError(ValueError):
    """An MCAP file whose records cannot be walked, or a chunk whose CRC does not match its records."""


@dataclass(frozen=True)
class _Chunk:
    offset: int  # of the chunk record's opcode byte in the file
    crc_offset: int  # of its uncompressed_crc field
    crc: int
    compression: str
    records: slice  # the records' bytes in the file
    uncompressed_size: int


def _non_empty(path: str | Path) -> Path:
    path = Path(path)
    if path.stat().st_size == 0:  # mmap cannot map an empty file
        raise ChunkCrcError(f"{path} is empty")
    return path


def _chunks(data: mmap.mmap | bytes, path: Path) -> Iterator[_Chunk]:
    if data[: len(_MAGIC)] != _MAGIC:
        raise ChunkCrcError(f"{path} is not an MCAP file (no magic at its start)")
    pos, end = len(_MAGIC), len(data)
    while pos < end:
        if pos + 9 > end:
            raise ChunkCrcError(f"{path} is truncated inside the record at byte {pos}")
        op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        content = pos + 9
        if content + length > end:
            raise ChunkCrcError(f"{path} is truncated: the record at byte {pos} runs past its end")
        if op == _OP_CHUNK:
            (uncompressed_size,) = struct.unpack_from("<Q", data, content + 16)
            (crc,) = struct.unpack_from("<I", data, content + _CRC_AT)
            (name_length,) = struct.unpack_from("<I", data, content + _CRC_AT + 4)
            name_at = content + _CRC_AT + 8
            compression = bytes(data[name_at : name_at + name_length]).decode("utf-8", "replace")
            (records_length,) = struct.unpack_from("<Q", data, name_at + name_length)
            records_at = name_at + name_length + 8
            if records_at + records_length > content + length:
                raise ChunkCrcError(f"{path}: the chunk at byte {pos} claims more records than it holds")
            yield _Chunk(pos, content + _CRC_AT, crc, compression, slice(records_at, records_at + records_length),
                         uncompressed_size)  # fmt: skip
        if op == _OP_FOOTER:
            return
        pos = content + length


def fill_chunk_crcs(path: str | Path) -> int:
    """Write the CRC of every uncompressed chunk of the MCAP file ``path`` whose CRC is 0; return
    how many were written."""
    path = _non_empty(path)
    with path.open("r+b") as f, mmap.mmap(f.fileno(), 0) as data:
        filled = 0
        for chunk in _chunks(data, path):
            if chunk.crc == 0 and chunk.compression == "":
                struct.pack_into("<I", data, chunk.crc_offset, zlib.crc32(data[chunk.records]))
                filled += 1
        data.flush()
    return filled


def verify_chunk_crcs(path: str | Path) -> int:
    """Check every uncompressed chunk of ``path`` that carries a CRC; return how many were checked.
    Raises :class:`ChunkCrcError` naming the first chunk that fails, by its byte offset."""
    path = _non_empty(path)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        checked = 0
        for chunk in _chunks(data, path):
            if chunk.crc == 0 or chunk.compression != "":
                continue
            actual = zlib.crc32(data[chunk.records])
            if actual != chunk.crc:
                raise ChunkCrcError(
                    f"{path}: the chunk at byte {chunk.offset} fails its CRC (stored {chunk.crc:#010x}, "
                    f"computed {actual:#010x}): the file is damaged there"
                )
            checked += 1
    return checked
