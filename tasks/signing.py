"""Promotion-record signatures: Ed25519 keys (``cryptography``), signing and verification.

Plain functions and frozen dataclasses, no Prefect. The trust model:

* the **private key** signs every record. By default it lives outside the workspace at
  ``$XDG_CONFIG_HOME/bayespilot/promotion-key.pem`` (``~/.config/...``), mode 0600, created on
  the first signed append when missing (``signing.create_key``). ``signing.private_key_path``
  moves it; the environment variable named by ``signing.key_env`` (``BAYESPILOT_SIGNING_KEY``)
  overrides both with the PEM text itself or a path to it (CI, secret managers).
* a **verifier** (``verify``, the service, batch scoring, the shadow sidecar) holds public keys
  only: every ``*.pub`` in ``signing.trusted_keys_dir`` (default: the ``trusted/`` folder next
  to the default private key) plus the files or folders in ``signing.trusted_keys``.
* whoever signs publishes its public key into that trusted folder (outside the workspace) and
  into ``<workspace>/keys/<fingerprint>.pub``, so a serving host can be given that file. Keys in
  the workspace are **not** trusted unless ``signing.trust_workspace_keys`` says so: anyone who
  can write the workspace could add their own key there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

ALGORITHM = "ed25519"
KEY_FILE = "promotion-key.pem"
TRUSTED_DIR = "trusted"
DEFAULT_KEY_ENV = "BAYESPILOT_SIGNING_KEY"
# what is signed is this prefix + the record's canonical JSON: a signature over a record can
# never be replayed as a signature over some other kind of message made with the same key
DOMAIN = b"bayespilot-record-v1\n"
UNSIGNED = "unsigned (no signature block)"


class SigningError(RuntimeError):
    """A key cannot be created, read or used; the message says which and what to do."""


def default_key_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/bayespilot``, else ``~/.config/bayespilot``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base).expanduser() / "bayespilot"


@dataclass(frozen=True)
class KeySettings:
    """Where the private key and the trusted public keys are (resolved paths)."""

    private_key_path: Path
    trusted_keys_dir: Path
    trusted_keys: tuple[Path, ...] = ()
    key_env: str = DEFAULT_KEY_ENV
    create_key: bool = True
    workspace: Path | None = None  # public keys are published to <workspace>/keys/
    trust_workspace_keys: bool = False
    environ: Mapping[str, str] | None = field(default=None, compare=False, repr=False)
    state_dir: Path | None = None  # chain high-water marks (tasks/freshness.py); None: default

    @classmethod
    def from_config(
        cls,
        signing: Any,
        workspace: Path | None,
        *,
        environ: Mapping[str, str] | None = None,
        create_key: bool | None = None,
    ) -> KeySettings:
        """From the ``signing`` config section. ``create_key=False`` for processes that must
        never mint a key of their own (the service)."""
        home = default_key_dir(environ)
        return cls(
            private_key_path=Path(signing.private_key_path).expanduser()
            if signing.private_key_path
            else home / KEY_FILE,
            trusted_keys_dir=Path(signing.trusted_keys_dir).expanduser()
            if signing.trusted_keys_dir
            else home / TRUSTED_DIR,
            trusted_keys=tuple(Path(p).expanduser() for p in signing.trusted_keys),
            key_env=signing.key_env,
            create_key=signing.create_key if create_key is None else create_key,
            workspace=workspace,
            trust_workspace_keys=signing.trust_workspace_keys,
            environ=environ,
            state_dir=Path(signing.state_dir).expanduser() if signing.state_dir else None,
        )

    @property
    def published_dir(self) -> Path | None:
        return None if self.workspace is None else self.workspace / "keys"


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key: the ``key_id`` a signature names."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Signer:
    """A loaded private key; ``source`` says where it came from (never the key itself)."""

    private_key: Ed25519PrivateKey = field(repr=False)
    key_id: str
    source: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, message: bytes) -> dict[str, str]:
        """The signature block a record carries."""
        sig = self.private_key.sign(DOMAIN + message)
        return {
            "algorithm": ALGORITHM,
            "key_id": self.key_id,
            "value": base64.b64encode(sig).decode("ascii"),
        }


@dataclass(frozen=True)
class TrustStore:
    """The public keys whose signatures are accepted, by key id."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def with_key(self, public_key: Ed25519PublicKey) -> TrustStore:
        return TrustStore({**self.keys, fingerprint(public_key): public_key}, self.sources)

    def problem(self, message: bytes, signature: Any) -> str | None:
        """None when ``signature`` is a valid signature of ``message`` by a trusted key;
        otherwise why not (unsigned, malformed, unknown key, bad signature)."""
        if not signature:
            return f"{UNSIGNED}: it was not written by a promotion key"
        if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
            return f"signature is not an {ALGORITHM} signature block"
        key_id = str(signature.get("key_id", ""))
        key = self.keys.get(key_id)
        if key is None:
            where = ", ".join(self.sources) or "no trusted key configured"
            return (
                f"signed by unknown key {key_id[:16]}: not among the trusted public keys "
                f"({where}); add its .pub to signing.trusted_keys if you trust it"
            )
        try:
            raw = base64.b64decode(str(signature.get("value", "")), validate=True)
            key.verify(raw, DOMAIN + message)
        except (InvalidSignature, binascii.Error, ValueError):
            return f"bad signature for key {key_id[:16]} (record edited after signing?)"
        return None


# ---------------------------------------------------------------- private key
def _write_new_private_key(path: Path) -> Ed25519PrivateKey:
    """Create a key file with mode 0600 (O_EXCL: two processes never both write one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.warning(
        "created a new promotion signing key %s (public key %s); back it up: records it "
        "signs are trusted only by holders of its public key",
        path,
        fingerprint(key.public_key())[:16],
    )
    return key


def _parse_private(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{source} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{source} holds a {type(key).__name__}; an Ed25519 key is needed")
    return key


def _read_key_file(path: Path, source: str, *, strict_mode: bool) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read {source}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        msg = f"{source} is readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 {path}"
        if strict_mode:
            raise SigningError(msg)
        log.warning(msg)
    return _parse_private(pem, source)


def load_signer(settings: KeySettings) -> Signer:
    """The promotion key: from the environment override, else the key file (created with mode
    0600 when missing and ``create_key``). Its public key is published (``publish``)."""
    env = os.environ if settings.environ is None else settings.environ
    value = env.get(settings.key_env, "").strip()
    if value.startswith("-----BEGIN"):
        source = f"${settings.key_env} (PEM)"
        key = _parse_private(value.encode(), source)
    elif value:
        path = Path(value).expanduser()
        source = f"${settings.key_env} -> {path}"
        key = _read_key_file(path, source, strict_mode=False)  # mounted secrets are often 0644
    else:
        path = settings.private_key_path
        source = str(path)
        if path.is_file():
            key = _read_key_file(path, f"signing key {path}", strict_mode=True)
        elif settings.create_key:
            try:
                key = _write_new_private_key(path)
            except FileExistsError:  # another process created it first
                key = _read_key_file(path, f"signing key {path}", strict_mode=True)
        else:
            raise SigningError(
                f"no promotion signing key: {path} does not exist and ${settings.key_env} is "
                "unset. Appending a record needs the private key: set signing.private_key_path "
                f"or ${settings.key_env} (this process does not create keys)"
            )
    signer = Signer(key, fingerprint(key.public_key()), source)
    publish(signer.public_key, settings)
    return signer


# ---------------------------------------------------------------- public keys
def _write_public(public_key: Ed25519PublicKey, folder: Path) -> Path:
    path = folder / f"{fingerprint(public_key)[:16]}.pub"
    if path.is_file() and path.read_bytes() == public_pem(public_key):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(public_pem(public_key))
    os.replace(tmp, path)
    return path


def publish(public_key: Ed25519PublicKey, settings: KeySettings) -> None:
    """Write the public key into the trusted folder (outside the workspace: this machine's
    verifiers trust it) and into ``<workspace>/keys/`` (to hand to a serving host)."""
    for folder in (settings.trusted_keys_dir, settings.published_dir):
        if folder is None:
            continue
        try:
            _write_public(public_key, folder)
        except OSError as exc:
            log.warning("could not publish the public key into %s: %s", folder, exc)


def read_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SigningError(f"public key {path} is unreadable: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"public key {path} is a {type(key).__name__}, not Ed25519")
    return key


def _key_files(locations: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for loc in locations:
        if loc.is_dir():
            out.extend(sorted(p for p in loc.glob("*.pub") if p.is_file()))
        elif loc.is_file():
            out.append(loc)
    return out


def load_trust(settings: KeySettings) -> TrustStore:
    """Every trusted public key. An unreadable key file is skipped with a warning (it can
    only make fewer records acceptable, never more)."""
    locations = [settings.trusted_keys_dir, *settings.trusted_keys]
    if settings.trust_workspace_keys and settings.published_dir is not None:
        locations.append(settings.published_dir)
    keys: dict[str, Ed25519PublicKey] = {}
    for path in _key_files(locations):
        try:
            key = read_public_key(path)
        except SigningError as exc:
            log.warning("%s", exc)
            continue
        keys[fingerprint(key)] = key
    return TrustStore(keys, tuple(str(p) for p in locations))
