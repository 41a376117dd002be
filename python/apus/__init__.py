"""Import Swift files as Python modules.

``apus.load("handlers/pricing.swift")`` compiles the file into a CPython
extension module (cached by the hash of the source, the SDK, the compiler and
the Python headers) and imports it. ``import apus.auto`` installs an import hook
so that ``from handlers import pricing`` finds ``handlers/pricing.swift``.

Compilation is done by the ``apus`` command (the gateway's own compiler), found
through ``$APUS_BIN`` or on ``PATH``; builds share the gateway's cache when the
file sits in a project with a ``gateway.conf`` or ``.apus-cache``.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from types import ModuleType

__all__ = ["load", "build", "CompileError", "ToolchainError", "SwiftError"]


class SwiftError(RuntimeError):
    """An error thrown by an exported Swift function; the message is the error's text."""


class CompileError(ImportError):
    """The Swift file did not compile. ``str(error)`` carries the compiler's messages with file:line."""

    def __init__(self, source: str, message: str):
        super().__init__(message)
        self.source = source
        self.message = message


class ToolchainError(ImportError):
    """Something needed to compile Swift is missing: the apus command, swiftc or the Python headers."""


_INSTALL_HINT = (
    "install Apus (the `apus` command, e.g. `swift build -c release` in the Apus repository and put "
    ".build/release on PATH, or set APUS_BIN) and a Swift 6 toolchain with swiftc on PATH"
)

_lock = threading.Lock()
_loaded: dict[str, ModuleType] = {}


def _apus_command() -> str:
    explicit = os.environ.get("APUS_BIN")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise ToolchainError(f"APUS_BIN={explicit} is not an executable; {_INSTALL_HINT}")
    found = shutil.which("apus")
    if not found:
        raise ToolchainError(f"the `apus` command is not on PATH; {_INSTALL_HINT}")
    return found


def _cache_dir(source: Path) -> Path:
    """$APUS_CACHE_DIR, else the project's gateway cache, else ~/.cache/apus."""
    explicit = os.environ.get("APUS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    for folder in source.parents:
        if (folder / ".apus-cache").is_dir() or (folder / "gateway.conf").is_file():
            return folder / ".apus-cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "apus"


def _identity(path: str | None) -> str:
    """Which binary this is, for the warm-start index: its path, size and modification time."""
    if not path:
        return "-"
    try:
        info = os.stat(os.path.realpath(path))
    except OSError:
        return "-"
    return f"{os.path.realpath(path)}:{info.st_size}:{info.st_mtime_ns}"


def _sdk_identity(apus: str) -> str:
    """The SDK sources apus compiles against, found as apus finds them ($APUS_SDK_DIR, else
    upwards from the binary: a checkout's Sources/, an install's share/apus/sdk): the newest
    modification time among them."""
    roots = [os.environ["APUS_SDK_DIR"]] if os.environ.get("APUS_SDK_DIR") else []
    folder = Path(os.path.realpath(apus)).parent
    while folder != folder.parent:
        roots += [str(folder / "Sources"), str(folder / "share" / "apus" / "sdk")]
        folder = folder.parent
    for root in roots:
        if (Path(root) / "ApusSDK" / "Entry" / "Exports.swift").is_file():
            newest = max(
                (entry.stat().st_mtime_ns for name in ("ApusSDK", "CApusABI") for entry in (Path(root) / name).rglob("*")),
                default=0,
            )
            return f"{root}:{newest}"
    return "-"


def _index_key(source: Path, apus: str, include: str, suffix: str, debug: bool) -> str:
    """What `apus python build` would hash, as seen from here: the source, the apus binary,
    the SDK sources, the compiler binary, the Python headers and the flags."""
    digest = hashlib.sha256(source.read_bytes())
    parts = (_identity(apus), _sdk_identity(apus), _identity(shutil.which("swiftc")), include, suffix, str(debug))
    for part in parts:
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:32]


def build(path: str | os.PathLike, *, debug: bool = False) -> Path:
    """Compiles ``path`` (cached) and returns the extension module's file.

    A file already built with the same apus, compiler and headers is found through a
    small index in the cache without starting `apus`; anything else asks `apus`, which
    checks its own, complete cache key.
    """
    source = Path(path).resolve()
    if not source.is_file():
        raise FileNotFoundError(f"no Swift file at {source}")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise ToolchainError(
            f"no Python.h in {include}: install this interpreter's development headers (Debian: apt-get install python3-dev)"
        )
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or importlib.machinery.EXTENSION_SUFFIXES[0]
    apus = _apus_command()
    cache = _cache_dir(source)
    index = cache / "py-index" / _index_key(source, apus, include, suffix, debug)
    try:
        known = Path(index.read_text().strip())
        if known.is_file():
            return known
    except OSError:
        pass
    library = _build_with_apus(apus, source, include, suffix, cache, debug)
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        temporary = index.with_name(f".{index.name}.{os.getpid()}")
        temporary.write_text(str(library))
        temporary.replace(index)
    except OSError:
        pass  # the index only saves a process start
    return library


def _build_with_apus(apus: str, source: Path, include: str, suffix: str, cache: Path, debug: bool) -> Path:
    command = [
        apus, "python", "build", str(source),
        "--python-include", include, "--extension-suffix", suffix, "--cache", str(cache),
    ]
    if debug:
        command.append("--debug")
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as error:
        raise ToolchainError(f"cannot run {command[0]}: {error}; {_INSTALL_HINT}") from None
    if done.returncode == 3:
        raise ToolchainError(done.stderr.strip())
    if done.returncode != 0:
        raise CompileError(str(source), done.stderr.strip() or f"apus exited with status {done.returncode}")
    return Path(json.loads(done.stdout.strip().splitlines()[-1])["path"])


def _import_extension(name: str, library: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(library))
    spec = importlib.util.spec_from_file_location(name, str(library), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def load(path: str | os.PathLike, *, debug: bool = False) -> ModuleType:
    """Compiles the Swift file at ``path`` (cached) and returns it as a module.

    The module has one function per ``export`` in the file's
    ``let python = PythonExports { ... }``. Loading the same unchanged file again
    returns the same module; after an edit, a new build is imported beside it.
    Raises CompileError (with the compiler's file:line messages) or ToolchainError.
    """
    library = build(path, debug=debug)
    with _lock:
        module = _loaded.get(str(library))
        if module is None:
            module = _import_extension(library.name.split(".", 1)[0], library)
            _loaded[str(library)] = module
        return module
