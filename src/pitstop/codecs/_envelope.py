"""How encoded bytes are stored: compressed, encrypted, deduplicated.

A stored payload carries its recipe in its tag: ``<serializer>[+zstd|+zlib]
[+aes.<key id>]`` for bytes kept in the row, or ``<serializer>+ref`` for a row
whose bytes are a 32-byte digest of a blob in ``pitstop_blobs`` (which holds
its own recipe, ``[zstd|zlib][+aes.<key id>]``). Readers follow the recipe,
so what one writer chose (or a later configuration) never stops another from
reading.

- **Compression** (zstd, level 1, by default): from ``compress_min`` bytes on,
  kept only when it saves at least 10% (for large payloads four 64 KiB samples
  decide first, so incompressible data such as random floats costs little).
- **Deduplication**: payloads from ``dedup_min`` bytes on are stored once per
  digest (sha256 of the encoded bytes; with encryption an HMAC under the key,
  so equal plaintexts are not revealed across keys), across checkpoints and
  runs, and collected when no checkpoint refers to them.
- **Encryption** (``AesGcmKeys``; needs the ``cryptography`` package): AES-GCM
  with a random nonce; the key id is stored with each payload, a reader accepts
  every key it is given (rotation), and a wrong or missing key raises
  ``EncryptionKeyError`` naming the key id. Metadata, node statuses and errors
  stay readable without a key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import zlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

import msgspec

from .._errors import EncryptionKeyError, SerializationError

REF = "ref"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SAMPLE = 64 * 1024
_AAD = b"pitstop-payload-v1:"

Compression = Literal["zstd", "zlib"]


class AesGcmKeys:
    """AES-GCM keys by id: the ``active`` one encrypts, all of them decrypt.

    Rotate by adding a new key and making it active; keep old keys as long as
    checkpoints written with them should stay readable.

    Args:
        keys: key id -> 16, 24 or 32 bytes of key (e.g. ``os.urandom(32)``).
        active: the id that encrypts new payloads (default: the only key).

    Raises:
        ValueError: a bad key id or key length, or no clear active key.
        ImportError: the ``cryptography`` package is not installed (``pitstop[crypto]``).
    """

    def __init__(self, keys: Mapping[str, bytes], active: str | None = None) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ValueError("AesGcmKeys needs at least one key")
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r} must be 1-64 of [A-Za-z0-9_.-]")
            if not isinstance(key, bytes) or len(key) not in (16, 24, 32):
                raise ValueError(f"key {key_id!r} must be 16, 24 or 32 bytes")
        if active is None:
            if len(keys) != 1:
                raise ValueError("several keys given: say which one is active")
            active = next(iter(keys))
        if active not in keys:
            raise ValueError(f"active key {active!r} is not among the keys")
        self.active = active
        self._keys = dict(keys)
        self._aead = {key_id: AESGCM(key) for key_id, key in keys.items()}

    def __repr__(self) -> str:  # never show key bytes
        return f"AesGcmKeys(ids={sorted(self._keys)}, active={self.active!r})"

    def digest(self, data: bytes) -> bytes:
        return hmac.new(self._keys[self.active], data, hashlib.sha256).digest()

    def check_digest(self, key_id: str, data: bytes) -> bytes:
        return hmac.new(self._key(key_id), data, hashlib.sha256).digest()

    def encrypt(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead[self.active].encrypt(nonce, data, aad)

    def decrypt(self, key_id: str, data: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        aead = self._aead.get(key_id)
        if aead is None:
            raise EncryptionKeyError(key_id, f"no key {key_id!r} was given to this reader")
        try:
            return aead.decrypt(data[:12], data[12:], aad)
        except InvalidTag:
            raise EncryptionKeyError(
                key_id, f"key {key_id!r} does not open this payload (wrong key, or damaged)"
            ) from None

    def _key(self, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise EncryptionKeyError(key_id, f"no key {key_id!r} was given to this reader")
        return key


class Sealed(msgspec.Struct, frozen=True, gc=False):
    """A payload ready to store (a Struct: made on every node's finish, and its
    ``__init__`` is C)."""

    tag: str
    data: bytes
    """What the row holds: the payload, or a blob's digest."""
    blob: tuple[str, str, bytes] | None = None
    """(digest hex, recipe, stored bytes) when the payload goes to the blob table."""


class Envelope:
    """Compression, deduplication and encryption of stored payloads.

    Args:
        compression: ``"zstd"`` (default), ``"zlib"`` or None.
        compress_min: payloads smaller than this are stored as they are.
        dedup_min: payloads from this size on are stored once per content digest.
        encryption: keys to encrypt new payloads and open stored ones.
    """

    def __init__(
        self,
        *,
        compression: Compression | None = "zstd",
        compress_min: int = 4096,
        dedup_min: int = 16 * 1024,
        encryption: AesGcmKeys | None = None,
    ) -> None:
        if compression not in ("zstd", "zlib", None):
            raise ValueError(f"compression must be 'zstd', 'zlib' or None, got {compression!r}")
        for name, value in (("compress_min", compress_min), ("dedup_min", dedup_min)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if encryption is not None and not isinstance(encryption, AesGcmKeys):
            raise TypeError("encryption must be AesGcmKeys or None")
        self.compression = compression
        self.compress_min = compress_min
        self.dedup_min = max(dedup_min, 33)  # a digest (32 bytes) must be smaller than the blob
        self.keys = encryption

    def __repr__(self) -> str:
        return (f"Envelope(compression={self.compression!r}, compress_min={self.compress_min}, "
                f"dedup_min={self.dedup_min}, encryption={self.keys!r})")  # fmt: skip

    def seal(self, tag: str, data: bytes, *, dedup: bool = True) -> Sealed:
        """Store ``data`` (written by serializer ``tag``) as this envelope says."""
        if len(data) < self.compress_min and self.keys is None:
            return Sealed(tag, data)  # the common small case: nothing to do
        ref = dedup and len(data) >= self.dedup_min
        digest = None
        if ref:
            digest = self.keys.digest(data) if self.keys else hashlib.sha256(data).digest()
        steps: list[str] = []
        out = data
        if self.compression is not None and len(data) >= self.compress_min:
            packed = _compress(self.compression, data)
            if packed is not None:
                out = packed
                steps.append(self.compression)
        if self.keys is not None:
            key_step = f"aes.{self.keys.active}"
            aad = _AAD + f"{tag}+{'+'.join([*steps, key_step])}".encode()
            out = self.keys.encrypt(out, aad)
            steps.append(key_step)
        recipe = "+".join(steps)
        if digest is not None:
            return Sealed(f"{tag}+{REF}", digest, (digest.hex(), recipe, out))
        return Sealed(f"{tag}+{recipe}" if recipe else tag, out)

    def open(self, tag: str, data: bytes) -> tuple[str, bytes]:
        """The serializer tag and encoded bytes of a payload stored in a row.

        Raises:
            SerializationError: an unknown step or damaged data (or ``tag`` is a ref).
            EncryptionKeyError: the payload's key is missing or does not open it.
        """
        ser, steps, ref = parse(tag)
        if ref:
            raise SerializationError("a blob reference needs its blob", tag=tag)
        return ser, self._undo(ser, steps, data)

    def open_blob(self, ser: str, recipe: str, stored: bytes) -> bytes:
        """The encoded bytes of a blob (check them against the reference with ``digest_of``)."""
        return self._undo(ser, tuple(recipe.split("+")) if recipe else (), stored)

    def digest_of(self, recipe: str, plain: bytes) -> bytes:
        """The digest a blob stored with ``recipe`` has, given its encoded bytes."""
        key_step = next((s for s in recipe.split("+") if s.startswith("aes.")), None)
        if key_step is None:
            return hashlib.sha256(plain).digest()
        if self.keys is None:
            raise EncryptionKeyError(key_step[4:], "this reader was given no keys")
        return self.keys.check_digest(key_step[4:], plain)

    def _undo(self, ser: str, steps: tuple[str, ...], data: bytes) -> bytes:
        out = data
        for i in range(len(steps) - 1, -1, -1):
            step = steps[i]
            if step.startswith("aes."):
                key_id = step[4:]
                if self.keys is None:
                    raise EncryptionKeyError(key_id, f"payload encrypted with key {key_id!r}; "
                                             "this reader was given no keys")  # fmt: skip
                aad = _AAD + f"{ser}+{'+'.join(steps[: i + 1])}".encode()
                out = self.keys.decrypt(key_id, out, aad)
            elif step in ("zstd", "zlib"):
                out = _decompress(step, out)
            else:
                raise SerializationError(f"unknown storage step {step!r}", tag=ser)
        return out


@lru_cache(maxsize=256)
def parse(tag: str) -> tuple[str, tuple[str, ...], bool]:
    """(serializer, steps, is_ref) of a stored tag."""
    parts = tag.split("+")
    if parts[-1] == REF:
        return parts[0], (), True
    return parts[0], tuple(parts[1:]), False


def is_ref(tag: str) -> bool:
    """Whether a row stored with ``tag`` holds a blob's digest instead of the payload."""
    return tag.endswith("+" + REF)


def _compress(kind: str, data: bytes) -> bytes | None:
    """Compressed bytes, or None when compression would not save 10%."""
    if len(data) > 8 * _SAMPLE:
        # Four slices spread over the payload (a frame's columns differ: one slice
        # could land on random floats while the rest compresses well).
        step = len(data) // 4
        view = memoryview(data)
        sample = b"".join(view[i * step + step // 2 :][:_SAMPLE] for i in range(4))
        if len(_raw_compress(kind, sample)) > 0.9 * len(sample):
            return None
    out = _raw_compress(kind, data)
    return out if len(out) <= 0.9 * len(data) else None


def _raw_compress(kind: str, data: bytes) -> bytes:
    if kind == "zlib":
        return zlib.compress(data, 1)
    import zstandard

    return zstandard.ZstdCompressor(level=1).compress(data)


def _decompress(kind: str, data: bytes) -> bytes:
    try:
        if kind == "zlib":
            return zlib.decompress(data)
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data)
    except Exception as exc:  # zlib.error, zstandard.ZstdError
        raise SerializationError(f"cannot decompress ({kind}): {exc}", tag=kind) from exc
