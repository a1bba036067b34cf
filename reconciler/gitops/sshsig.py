"""SSH signatures of commits (OpenSSH's SSHSIG format), read and checked in-process.

``reconciler.gitops.commit_signers`` checks the signature of every commit in a range of
history. One ``ssh-keygen -Y`` process per commit costs 4-5 ms on a small edge box; 1,000 new
commits would take seconds. So an Ed25519 signature — the kind ``ssh-keygen -t ed25519``
makes, and most people sign with — is checked here, through the system's libcrypto (the
OpenSSL library Python's own ``ssl`` module is built on), in about 0.1 ms; so are ECDSA
(nistp256/384/521) and RSA (``rsa-sha2-256``/``-512``) signatures. Security-key types
(``sk-*``), SHA-1 RSA signatures, and every signature when libcrypto cannot be loaded, are left
to ``ssh-keygen -Y check-novalidate`` by the caller.

What is checked follows PROTOCOL.sshsig: the armored blob starts with ``SSHSIG`` and version
1; the namespace is ``git``; the hash is sha256 or sha512; and the signature, made with the
public key carried in the blob, is good over ``"SSHSIG" || namespace || reserved || hash
algorithm || H(payload)``. Whether that key belongs to anybody is the caller's question: the
key is returned as ``"<type> <base64>"``, the form project members' keys are compared in.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import threading
from dataclasses import dataclass

__all__ = ["ARMOR_BEGIN", "SshSignature", "fingerprint", "parse_sshsig", "verify_in_process"]

ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"
_NAMESPACE = b"git"
_HASHES = frozenset({b"sha256", b"sha512"})
_ED25519 = b"ssh-ed25519"
_NID_ED25519 = 1087  # OpenSSL's EVP_PKEY_ED25519
# DER of the algorithm identifiers of a SubjectPublicKeyInfo, and the digest of each curve
_EC_KEY = bytes.fromhex("06072a8648ce3d0201")
_CURVES = {b"nistp256": (bytes.fromhex("06082a8648ce3d030107"), "sha256"),
           b"nistp384": (bytes.fromhex("06052b81040022"), "sha384"),
           b"nistp521": (bytes.fromhex("06052b81040023"), "sha512")}
_RSA_KEY = bytes.fromhex("06092a864886f70d0101010500")
_RSA_HASHES = {b"rsa-sha2-256": "sha256", b"rsa-sha2-512": "sha512"}
_RSA_MINIMUM_BITS = 1024


class SshsigError(ValueError):
    """A signature that is not a well-formed SSHSIG blob for git."""


@dataclass(frozen=True)
class SshSignature:
    """The parts of one SSHSIG blob."""

    key_type: str
    key_blob: bytes  # the public key, SSH wire format
    hash_algorithm: bytes
    reserved: bytes
    sig_type: bytes
    sig_blob: bytes

    @property
    def public_key(self) -> str:
        """``"<type> <base64>"``, as :func:`reconciler.core.projects.normalize_ssh_key`."""
        return f"{self.key_type} {base64.b64encode(self.key_blob).decode()}"


def fingerprint(key_blob: bytes) -> str:
    """The key's fingerprint as ssh-keygen prints it (``SHA256:...``)."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise SshsigError("truncated")
    size = int.from_bytes(data[pos:pos + 4], "big")
    end = pos + 4 + size
    if end > len(data):
        raise SshsigError("truncated")
    return data[pos + 4:end], end


def parse_sshsig(armored: str) -> SshSignature:
    """The blob of an armored SSH signature; :class:`SshsigError` when it is malformed or not
    made for git."""
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        raise SshsigError("not an armored SSH signature")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SshsigError("bad base64") from exc
    if blob[:6] != b"SSHSIG" or int.from_bytes(blob[6:10], "big") != 1:
        raise SshsigError("not an SSHSIG version 1 blob")
    key, pos = _string(blob, 10)
    namespace, pos = _string(blob, pos)
    reserved, pos = _string(blob, pos)
    hash_algorithm, pos = _string(blob, pos)
    signature, pos = _string(blob, pos)
    if pos != len(blob):
        raise SshsigError("trailing data")
    if namespace != _NAMESPACE:
        raise SshsigError(f"made for namespace {namespace.decode('ascii', 'replace')!r}, "
                          "not 'git'")
    if hash_algorithm not in _HASHES:
        raise SshsigError(f"unsupported hash {hash_algorithm.decode('ascii', 'replace')!r}")
    key_type, _ = _string(key, 0)
    sig_type, rest = _string(signature, 0)
    sig_blob, end = _string(signature, rest)
    if end != len(signature):
        raise SshsigError("trailing data in the signature")
    return SshSignature(key_type.decode("ascii", "replace"), key, hash_algorithm, reserved,
                        sig_type, sig_blob)


def _signed_data(sig: SshSignature, payload: bytes) -> bytes:
    digest = hashlib.new(sig.hash_algorithm.decode(), payload).digest()
    return b"".join(len(part).to_bytes(4, "big") + part if i else part for i, part in
                    enumerate((b"SSHSIG", _NAMESPACE, sig.reserved, sig.hash_algorithm,
                               digest)))


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = bytes([size]) if size < 128 else (
        bytes([0x80 | ((size.bit_length() + 7) // 8)])
        + size.to_bytes((size.bit_length() + 7) // 8, "big"))
    return bytes([tag]) + length + body


def _der_int(mpint: bytes) -> bytes:
    """An SSH mpint (minimal two's complement, like DER) as a DER INTEGER."""
    return _der(0x02, mpint or b"\0")


def _public_key_der(sig: SshSignature) -> tuple[bytes, str, bytes] | None:
    """(SubjectPublicKeyInfo DER, digest, DER signature) of an ECDSA or RSA signature; None
    for other types."""
    kind, pos = _string(sig.key_blob, 0)
    if kind.startswith(b"ecdsa-sha2-") and sig.sig_type == kind:
        curve, pos = _string(sig.key_blob, pos)
        point, end = _string(sig.key_blob, pos)
        if curve not in _CURVES or kind != b"ecdsa-sha2-" + curve or end != len(sig.key_blob):
            return None
        oid, digest = _CURVES[curve]
        r, rest = _string(sig.sig_blob, 0)
        s_, end = _string(sig.sig_blob, rest)
        if end != len(sig.sig_blob):
            return None
        spki = _der(0x30, _der(0x30, _EC_KEY + oid) + _der(0x03, b"\0" + point))
        return spki, digest, _der(0x30, _der_int(r) + _der_int(s_))
    if kind == b"ssh-rsa" and sig.sig_type in _RSA_HASHES:
        e, pos = _string(sig.key_blob, pos)
        n, end = _string(sig.key_blob, pos)
        if end != len(sig.key_blob) or len(n.lstrip(b"\0")) * 8 < _RSA_MINIMUM_BITS:
            return None  # ssh-keygen refuses keys under 1024 bits: let it say so
        rsa = _der(0x30, _der_int(n) + _der_int(e))
        spki = _der(0x30, _der(0x30, _RSA_KEY) + _der(0x03, b"\0" + rsa))
        return spki, _RSA_HASHES[sig.sig_type], sig.sig_blob
    return None


class _LibCrypto:
    """The few libcrypto calls a signature check needs (OpenSSL 1.1.1 and later)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        self.new_key = lib.EVP_PKEY_new_raw_public_key
        self.new_key.restype, self.new_key.argtypes = vp, [ctypes.c_int, vp, cp, sz]
        self.free_key = lib.EVP_PKEY_free
        self.free_key.restype, self.free_key.argtypes = None, [vp]
        self.new_ctx = lib.EVP_MD_CTX_new
        self.new_ctx.restype, self.new_ctx.argtypes = vp, []
        self.free_ctx = lib.EVP_MD_CTX_free
        self.free_ctx.restype, self.free_ctx.argtypes = None, [vp]
        self.init = lib.EVP_DigestVerifyInit
        self.init.restype, self.init.argtypes = ctypes.c_int, [vp, vp, vp, vp, vp]
        self.verify = lib.EVP_DigestVerify
        self.verify.restype, self.verify.argtypes = ctypes.c_int, [vp, cp, sz, cp, sz]
        self.d2i = lib.d2i_PUBKEY
        self.d2i.restype, self.d2i.argtypes = vp, [vp, ctypes.POINTER(vp), ctypes.c_long]
        self.digests = {}
        for name in ("sha256", "sha384", "sha512"):
            md = getattr(lib, f"EVP_{name}")
            md.restype, md.argtypes = vp, []
            self.digests[name] = md

    def ed25519(self, public: bytes, signature: bytes, data: bytes) -> bool:
        return self._verify(self.new_key(_NID_ED25519, None, public, len(public)), None,
                            signature, data)

    def der(self, spki: bytes, digest: str, signature: bytes, data: bytes) -> bool:
        """A signature by the key of a DER SubjectPublicKeyInfo (ECDSA, RSA PKCS#1 v1.5)."""
        buffer = ctypes.create_string_buffer(spki, len(spki))
        cursor = ctypes.c_void_p(ctypes.addressof(buffer))
        key = self.d2i(None, ctypes.byref(cursor), len(spki))
        return self._verify(key, self.digests[digest](), signature, data)

    def _verify(self, key: int | None, md: int | None, signature: bytes, data: bytes) -> bool:
        if not key:
            return False
        ctx = self.new_ctx()
        try:
            return bool(ctx) and self.init(ctx, None, md, None, key) == 1 and \
                self.verify(ctx, signature, len(signature), data, len(data)) == 1
        finally:
            if ctx:
                self.free_ctx(ctx)
            self.free_key(key)


_lock = threading.Lock()
_loaded: list[_LibCrypto | None] = []


def _libcrypto() -> _LibCrypto | None:
    """libcrypto, loaded once; None when it (or a call it needs) is not there."""
    with _lock:
        if not _loaded:
            found: _LibCrypto | None = None
            for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3",
                         "libcrypto.so.1.1"):
                if not name:
                    continue
                try:
                    found = _LibCrypto(ctypes.CDLL(name))
                    break
                except (OSError, AttributeError):
                    continue
            _loaded.append(found)
        return _loaded[0]


def verify_in_process(sig: SshSignature, payload: bytes) -> bool | None:
    """Whether ``sig`` is a good signature of ``payload`` by its own key; None when it cannot
    be checked here (a security key, a SHA-1 RSA signature, no libcrypto): ask ssh-keygen."""
    lib = _libcrypto()
    if lib is None:
        return None
    if sig.key_type != _ED25519.decode() or sig.sig_type != _ED25519:
        try:
            found = _public_key_der(sig)
        except SshsigError:
            return False
        if found is None:
            return None
        spki, digest, signature = found
        return lib.der(spki, digest, signature, _signed_data(sig, payload))
    try:
        kind, pos = _string(sig.key_blob, 0)
        public, end = _string(sig.key_blob, pos)
    except SshsigError:
        return False
    if kind != _ED25519 or end != len(sig.key_blob) or len(public) != 32 \
            or len(sig.sig_blob) != 64:
        return False
    return lib.ed25519(public, sig.sig_blob, _signed_data(sig, payload))
