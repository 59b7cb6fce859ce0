"""How a report's bytes are sealed on their way to disk (compressed, then encrypted) and opened.

A sealed report is written once, streaming, into its staged temporary: the rendered report goes
through the compressor, then through AES-256-GCM, and what reaches the file is hashed (sha256)
as it is written, so the report index can list the digest of exactly the bytes published.

The encrypted file format, version 1 (all of it in one file, `.enc` after the other suffixes):

    offset 0   4 bytes   magic b"LWRE" (logwarden report, encrypted)
    offset 4   1 byte    format version, 1
    offset 5   8 bytes   key id: the first 8 bytes of sha256(b"logwarden report key\\0" + key)
    offset 13  12 bytes  nonce, random for every file
    offset 25  ...       ciphertext of the (compressed) report
    last 16    16 bytes  GCM tag

The 25-byte header is authenticated as associated data, so a changed key id or version fails
the tag check like a changed byte of ciphertext. The key id tells which key a file needs without
trying them all, and lets `report decrypt` with the wrong key say so instead of "tampered".

The key file holds 32 bytes (AES-256): raw, or base64 text (`openssl rand -base64 32`).

Rejected: age/GPG (a second tool and key format for operators to manage, and neither is in the
Python standard set of well-kept libraries); Fernet (AES-128-CBC + HMAC, and it base64-encodes
the whole payload, a third more bytes on disk); a one-shot AESGCM call when sealing (it needs the
whole report in memory; the streaming GCM encryptor does not).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import importlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

Compression = Literal["gzip", "zstd"]
COMPRESSION_SUFFIXES: dict[str, Compression] = {".gz": "gzip", ".zst": "zstd"}
ENCRYPTED_SUFFIX = ".enc"
MAGIC = b"LWRE"
VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES + NONCE_BYTES
_KEY_ID_CONTEXT = b"logwarden report key\0"
GZIP_LEVEL = 6  # gzip's own default: most of the ratio of 9 at a fraction of its CPU
ZSTD_LEVEL = 3  # zstd's own default


class KeyFileError(Exception):
    """A key file that is missing, unreadable or not 32 bytes: a config error."""


class ReportOpenError(Exception):
    """A report that cannot be opened: wrong key, tampered, truncated, not what its name says."""


@dataclass(frozen=True, slots=True)
class ReportKey:
    """An AES-256 key from a key file, with the id that sealed files carry."""

    path: Path
    key: bytes = field(repr=False)

    @property
    def id(self) -> bytes:
        return hashlib.sha256(_KEY_ID_CONTEXT + self.key).digest()[:KEY_ID_BYTES]


def load_key(path: Path) -> ReportKey:
    """Read a key file: exactly 32 raw bytes, or base64 text of 32 bytes."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyFileError(f"cannot read the key file {path}: {error.strerror or error}") from error
    if len(data) == KEY_BYTES:
        return ReportKey(path, data)
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != KEY_BYTES:
        raise KeyFileError(
            f"the key file {path} must hold a 256-bit key: 32 raw bytes or their base64 "
            f"(`openssl rand -base64 32`); it holds {len(data)} bytes"
        )
    return ReportKey(path, decoded)


def missing_library(compress: Compression | None, encrypt: bool) -> str | None:
    """The package a report's settings need and this install lacks, with how to get it."""
    if compress == "zstd" and not _importable("zstandard"):
        return 'compress = "zstd" needs the zstandard package: pip install "logwarden[zstd]"'
    if encrypt and not _importable("cryptography.hazmat.primitives.ciphers"):
        return 'encrypt needs the cryptography package: pip install "logwarden[encrypt]"'
    return None


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def sealed_suffix(compress: Compression | None, encrypt: bool) -> str:
    """What follows `.json`/`.ndjson` in a published name: `.gz`/`.zst`, then `.enc`."""
    suffix = {None: "", "gzip": ".gz", "zstd": ".zst"}[compress]
    return suffix + (ENCRYPTED_SUFFIX if encrypt else "")


@dataclass(frozen=True, slots=True)
class Layers:
    """What a report file name says about its content: its format and the layers around it."""

    format: Literal["json", "ndjson"]
    compress: Compression | None
    encrypted: bool


def layers_of(name: str) -> Layers:
    """Parse `<id>.json[.gz|.zst][.enc]`; ValueError for a name that is not a report's."""
    rest = name
    encrypted = rest.endswith(ENCRYPTED_SUFFIX)
    rest = rest.removesuffix(ENCRYPTED_SUFFIX)
    compress = None
    for suffix, kind in COMPRESSION_SUFFIXES.items():
        if rest.endswith(suffix):
            compress, rest = kind, rest.removesuffix(suffix)
    if rest.endswith(".ndjson"):
        return Layers("ndjson", compress, encrypted)
    if rest.endswith(".json"):
        return Layers("json", compress, encrypted)
    raise ValueError(f"{name}: not a report name (<report>-<stamp>-<seq>.json[.gz|.zst][.enc])")


class _Compressor(Protocol):
    def compress(self, data: bytes | bytearray, /) -> bytes: ...
    def flush(self) -> bytes: ...


class SealingWriter:
    """Writes a report through compression and encryption into `stream`, hashing what lands.

    `close()` flushes every layer (the compressor's end, the GCM tag) but leaves `stream` open:
    the caller fsyncs and closes it.
    """

    def __init__(
        self, stream: BinaryIO, compress: Compression | None, key: ReportKey | None
    ) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.size = 0
        self._compressor: _Compressor | None = None
        if compress == "gzip":
            self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip framing
        elif compress == "zstd":
            import zstandard  # noqa: PLC0415 - optional: only a zstd report needs it

            self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        self._encryptor = None
        if key is not None:
            from cryptography.hazmat.primitives.ciphers import (  # noqa: PLC0415 - optional
                Cipher,
                algorithms,
                modes,
            )

            nonce = os.urandom(NONCE_BYTES)
            header = MAGIC + bytes([VERSION]) + key.id + nonce
            self._encryptor = Cipher(algorithms.AES(key.key), modes.GCM(nonce)).encryptor()
            self._encryptor.authenticate_additional_data(header)
            self._out(header)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, data: bytes | bytearray) -> None:
        """Every layer copies what it keeps: the caller may reuse `data` once this returns."""
        if self._compressor is not None:
            data = self._compressor.compress(data)
        self._encrypt(data)

    def close(self) -> None:
        if self._compressor is not None:
            self._encrypt(self._compressor.flush())
        if self._encryptor is not None:
            self._out(self._encryptor.finalize())
            self._out(self._encryptor.tag)

    def _encrypt(self, data: bytes | bytearray) -> None:
        if data:
            self._out(self._encryptor.update(data) if self._encryptor is not None else data)

    def _out(self, data: bytes | bytearray) -> None:
        self._stream.write(data)
        self._digest.update(data)
        self.size += len(data)


def open_report(path: Path, keys: Sequence[ReportKey] = ()) -> bytes:
    """A report file's plaintext: decrypted with the key whose id it carries, then decompressed.

    The whole file is authenticated before any of it is returned: a reader never acts on
    plaintext of a file that fails its tag.
    """
    return open_bytes(path.name, path.read_bytes(), keys)


def open_bytes(name: str, data: bytes, keys: Sequence[ReportKey] = ()) -> bytes:
    layers = layers_of(name)
    if layers.encrypted:
        data = decrypt(data, keys, name)
    if layers.compress == "gzip":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise ReportOpenError(f"{name}: not valid gzip: {error}") from error
    elif layers.compress == "zstd":
        if not _importable("zstandard"):
            raise ReportOpenError(
                f'{name}: needs the zstandard package: pip install "logwarden[zstd]"'
            )
        import zstandard  # noqa: PLC0415 - optional

        try:
            stream = zstandard.ZstdDecompressor().decompressobj()
            data = stream.decompress(data)
        except zstandard.ZstdError as error:
            raise ReportOpenError(f"{name}: not valid zstd: {error}") from error
        if not stream.eof:  # a cut file decodes to a prefix without complaint: say so
            raise ReportOpenError(f"{name}: not valid zstd: the frame ends early (cut file?)")
    return data


def key_id_of(data: bytes) -> bytes | None:
    """The key id an encrypted file carries, or None when it is not one of ours."""
    if len(data) < HEADER_BYTES + TAG_BYTES or not data.startswith(MAGIC):
        return None
    return data[len(MAGIC) + 1 : len(MAGIC) + 1 + KEY_ID_BYTES]


def decrypt(data: bytes, keys: Sequence[ReportKey], name: str) -> bytes:
    key_id = key_id_of(data)
    if key_id is None:
        raise ReportOpenError(f"{name}: not an encrypted logwarden report (or truncated)")
    if data[len(MAGIC)] != VERSION:
        raise ReportOpenError(f"{name}: encrypted with format version {data[len(MAGIC)]}, not 1")
    key = next((candidate for candidate in keys if candidate.id == key_id), None)
    if key is None:
        given = ", ".join(f"{k.path} has {k.id.hex()}" for k in keys)
        raise ReportOpenError(
            f"{name}: encrypted with key id {key_id.hex()}; "
            + (f"wrong key ({given})" if keys else "give its key file with --key FILE")
        )
    if not _importable("cryptography.hazmat.primitives.ciphers"):
        raise ReportOpenError(
            f'{name}: needs the cryptography package: pip install "logwarden[encrypt]"'
        )
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - optional
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    header, body = data[:HEADER_BYTES], data[HEADER_BYTES:]
    nonce = header[-NONCE_BYTES:]
    try:
        return AESGCM(key.key).decrypt(nonce, body, header)
    except InvalidTag as error:
        raise ReportOpenError(
            f"{name}: authentication failed with key {key.id.hex()}: the file was changed or cut"
        ) from error
