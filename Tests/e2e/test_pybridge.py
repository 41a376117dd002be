"""Python imports Swift: the `apus` Python package, the SDK's PythonExports and
the CPython bridge, through the real compiler and a real interpreter."""

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

import apus
from conftest import APUS, QUICKSTART, child_env

PYSWIFT = Path(__file__).resolve().parent / "pyswift"


@pytest.fixture(scope="module")
def cache(tmp_path_factory, handler_cache):
    """The session's compile cache (the SDK library is shared with the gateway tests)."""
    saved = {key: os.environ.get(key) for key in ("APUS_CACHE_DIR", "APUS_BIN")}
    os.environ["APUS_CACHE_DIR"] = str(handler_cache)
    os.environ["APUS_BIN"] = str(APUS)
    yield handler_cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def probe(cache):
    return apus.load(PYSWIFT / "probe.swift")


def python_env(cache, **extra) -> dict:
    env = child_env() | {"APUS_CACHE_DIR": str(cache), "APUS_BIN": str(APUS)}
    env.update(extra)
    return env


def test_every_conversion_round_trips(probe):
    assert probe.add(40, 2) == 42
    assert probe.add(True, 1) == 2  # bool is an int, as in Python
    assert probe.scale([1.0, 2, 3.5], 2.0) == [2.0, 4.0, 7.0]
    assert probe.scale((1.0,), 3) == [3.0]  # a tuple where a list is expected, an int where a float is
    assert probe.negate(True) is False
    assert probe.shout("héllo ✓") == "HÉLLO ✓!"
    assert probe.reverse_bytes(b"\x00abc\xff") == b"\xffcba\x00"
    assert probe.maybe_double(None) is None and probe.maybe_double(21) == 42
    assert probe.totals({"a": 1.5, "b": 2.0}) == {"a": 1.5, "b": 2.0, "total": 3.5}
    assert probe.min_max([5, -2, 9]) == (-2, 9)
    assert probe.swap(("x", 7)) == (7, "x")
    value = {"list": [1, 2.5, None, True, "s", b"b"], "tuple": (1, ("n",)), "dict": {1: {"k": []}}}
    assert probe.identity(value) == value
    assert probe.identity(-(2**63)) == -(2**63) and probe.identity(2**63 - 1) == 2**63 - 1
    assert probe.noop() is None
    assert probe.add.__name__ == "add" and "add" in dir(probe)


def test_wrong_arguments_raise_type_error_naming_the_argument(probe):
    with pytest.raises(TypeError, match=r"add\(\): argument 2: expected int, got str"):
        probe.add(1, "2")
    with pytest.raises(TypeError, match=r"add\(\) takes 2 arguments \(1 given\)"):
        probe.add(1)
    with pytest.raises(TypeError, match="keyword"):
        probe.add(a=1, b=2)
    with pytest.raises(TypeError, match=r"scale\(\): argument 1: item 1: expected float, got str"):
        probe.scale([1.0, "x"], 1.0)
    with pytest.raises(TypeError, match=r"object has no Swift conversion"):
        probe.identity(object())
    with pytest.raises(TypeError, match=r"expected a tuple of 2 items, got 3"):
        probe.swap(("a", 1, 2))
    with pytest.raises(TypeError, match=r"expected dict, got list"):
        probe.totals([])


def test_ints_beyond_64_bits_raise_overflow_error(probe):
    with pytest.raises(OverflowError, match="64-bit"):
        probe.add(2**64, 1)
    with pytest.raises(OverflowError):
        probe.identity([1, 2, -(2**70)])


def test_a_swift_throw_becomes_a_python_exception_with_its_text(probe):
    with pytest.raises(apus.SwiftError, match="account overdrawn by 5"):
        probe.withdraw(10, 15)
    assert isinstance(apus.SwiftError("x"), RuntimeError)
    with pytest.raises(ValueError, match="min_max of an empty list"):
        probe.min_max([])
    assert probe.withdraw(10, 3) == 7  # and the module still works afterwards


def test_hostile_values_raise_instead_of_crashing(probe):
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested deeper"):
        probe.identity(loop)
    with pytest.raises(ValueError):
        probe.shout("\ud800")  # a lone surrogate is not UTF-8
    assert probe.add(1, 1) == 2


def test_reference_counts_stay_balanced(probe):
    argument = ["kept", 1, 2.5]
    before = sys.getrefcount(argument)
    for _ in range(10_000):
        probe.identity(argument)
        probe.scale([1.0], 2.0)
    assert sys.getrefcount(argument) == before
    result = probe.identity({"fresh": [1, 2]})
    assert sys.getrefcount(result) == 2  # only `result` and getrefcount's argument
    inner = result["fresh"]
    assert sys.getrefcount(inner) == 3  # the dict, `inner` and getrefcount's argument


def test_a_million_mixed_calls_keep_rss_flat(cache):
    done = subprocess.run([sys.executable, str(PYSWIFT / "rss_loop.py"), str(PYSWIFT / "probe.swift"), "1000000"],
                          env=python_env(cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    before, after, calls = map(int, done.stdout.split())
    assert calls >= 1_000_000
    # A leak of one small object per call would be tens of MiB here.
    assert after - before < 4096, f"RSS grew from {before} KiB to {after} KiB over {calls} calls"


def test_the_gil_is_released_only_when_the_function_asks(probe):
    n = 1
    while True:  # size the work to ~0.3 s on this machine
        started = time.perf_counter()
        probe.spin_holding_gil(n)
        if time.perf_counter() - started > 0.3:
            break
        n *= 2
    ticks = 0
    stop = False

    def count():
        nonlocal ticks
        while not stop:
            ticks += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        time.sleep(0.05)
        held_start = ticks
        probe.spin_holding_gil(n)
        held = ticks - held_start
        released_start = ticks
        probe.spin_releasing_gil(n)
        released = ticks - released_start
    finally:
        stop = True
        counter.join()
    # Holding the GIL, the counting thread can only run around the call; released, it runs throughout.
    assert released > 10 * max(held, 1000), (held, released)


def test_import_hook_finds_swift_files_in_packages(cache, tmp_path):
    package = tmp_path / "handlers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pricing.swift").write_text(textwrap.dedent("""\
        let python = PythonExports { python in
            python.export("price") { (qty: Int, px: Double) -> Double in Double(qty) * px }
        }
        """))
    script = textwrap.dedent("""\
        import apus.auto
        from handlers import pricing
        import handlers.pricing as again
        print(pricing.__name__, pricing.price(3, 9.5), pricing is again)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=python_env(cache, PYTHONPATH=str(tmp_path)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["handlers.pricing", "28.5", "True"]


def test_an_edit_builds_a_new_module_beside_the_old_one(cache, tmp_path):
    source = tmp_path / "tax.swift"
    source.write_text('let python = PythonExports { python in python.export("rate") { () -> Double in 0.2 } }\n')
    first = apus.load(source)
    assert apus.load(source) is first  # unchanged: the cached build, the same module
    source.write_text('let python = PythonExports { python in python.export("rate") { () -> Double in 0.25 } }\n')
    second = apus.load(source)
    assert second is not first
    assert (first.rate(), second.rate()) == (0.2, 0.25)


def test_compile_errors_raise_with_file_and_line(cache, tmp_path):
    source = tmp_path / "broken.swift"
    source.write_text('let python = PythonExports { python in\n    python.export("f") { (x: Int) -> Int in x + "a" }\n}\n')
    with pytest.raises(apus.CompileError) as raised:
        apus.load(source)
    assert f"{source}:2:" in str(raised.value) and "error:" in str(raised.value)
    assert isinstance(raised.value, ImportError)


@pytest.mark.parametrize("name, text, message", [
    ("plain.swift", "let x = 1\n", "offers nothing to Python"),
    ("bad-name.swift", "let python = PythonExports { _ in }\n", "is not a Python module name"),
])
def test_files_that_cannot_be_modules_say_why(cache, tmp_path, name, text, message):
    source = tmp_path / name
    source.write_text(text)
    with pytest.raises(apus.CompileError, match=message):
        apus.load(source)


def test_a_missing_toolchain_says_what_to_install(cache, tmp_path):
    shutil.copy(PYSWIFT / "probe.swift", tmp_path / "fresh.swift")
    script = textwrap.dedent("""\
        import sys, apus
        try:
            apus.load(sys.argv[1])
        except apus.ToolchainError as error:
            print(error)
        """)
    base = {key: value for key, value in python_env(cache).items() if key != "APUS_BIN"}
    no_apus = base | {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "fresh.swift")], env=no_apus,
                          capture_output=True, text=True, timeout=60)
    assert "`apus` command is not on PATH" in done.stdout and "install Apus" in done.stdout, done.stdout + done.stderr
    # apus found, but no swiftc (and a cache that has never seen a toolchain).
    no_swiftc = base | {"PATH": "/usr/bin:/bin", "APUS_BIN": str(APUS), "APUS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "fresh.swift")], env=no_swiftc,
                          capture_output=True, text=True, timeout=60)
    assert "swiftc is not on PATH" in done.stdout and "install a Swift toolchain" in done.stdout, done.stdout + done.stderr


def test_quickstart_python_route_serves_the_native_routes_bytes(gateway):
    native = httpx.get(f"{gateway.url}/orderbook/ACME?n=200")
    assert native.status_code == 200 and "server" not in native.headers
    denied = httpx.get(f"{gateway.url}/account/orderbook/ACME?n=200")
    assert denied.status_code == 401
    through_python = httpx.get(f"{gateway.url}/account/orderbook/ACME?n=200", headers={"X-API-Key": "demo-key"}, timeout=120)
    assert through_python.status_code == 200, through_python.text
    assert through_python.headers["server"] == "uvicorn"  # served by Python...
    assert through_python.content == native.content  # ...with the Swift serializer's bytes
    invalid = httpx.get(f"{gateway.url}/account/orderbook/bad?n=2", headers={"X-API-Key": "demo-key"})
    assert invalid.status_code == 422 and "upper-case" in invalid.json()["error"]
    assert httpx.get(f"{gateway.url}/orderbook/bad?n=2").status_code == 422


def other_interpreters() -> list[str]:
    """Other CPython 3.x versions on this machine (pyenv's), for the header-only shim."""
    found = set()
    for root in [Path.home() / ".pyenv" / "versions", Path("/usr/bin")]:
        for candidate in sorted(root.glob("3.1*/bin/python3")) + sorted(root.glob("python3.1?")):
            version = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
                                     capture_output=True, text=True).stdout.strip()
            if version and version != str(sys.version_info[:2]):
                found.add((version, str(candidate)))
    return [path for _, path in sorted(dict(found).items())] if found else []


@pytest.mark.parametrize("interpreter", other_interpreters() or [pytest.param(None, marks=pytest.mark.skip("no other Python 3.1x"))])
def test_the_same_file_imports_under_other_python_versions(cache, interpreter):
    script = textwrap.dedent("""\
        import sys, apus
        probe = apus.load(sys.argv[1])
        assert probe.identity({"a": [1, 2.5, None, (b"x", True)]}) == {"a": [1, 2.5, None, (b"x", True)]}
        try:
            probe.add(2**70, 1)
        except OverflowError:
            print(sys.version_info[:2], "ok")
        """)
    env = python_env(cache, PYTHONPATH=str(Path(apus.__file__).resolve().parents[1]))
    done = subprocess.run([interpreter, "-c", script, str(PYSWIFT / "probe.swift")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr


def test_a_warm_load_does_not_start_apus_but_an_edit_does(cache, tmp_path):
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "apus-wrapper"
    wrapper.write_text(f"#!/bin/sh\necho run >> {calls}\nexec {APUS} \"$@\"\n")
    wrapper.chmod(0o755)
    source = tmp_path / "warm.swift"
    source.write_text('let python = PythonExports { python in python.export("v") { () -> Int in 1 } }\n')
    script = "import sys, apus; print(apus.load(sys.argv[1]).v())"
    env = python_env(cache, APUS_BIN=str(wrapper))

    def load() -> str:
        done = subprocess.run([sys.executable, "-c", script, str(source)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert load() == "1"
    assert load() == "1"  # a new interpreter, the same unchanged file: found through the cache index
    assert calls.read_text().count("run") == 1
    source.write_text('let python = PythonExports { python in python.export("v") { () -> Int in 2 } }\n')
    assert load() == "2"
    assert calls.read_text().count("run") == 2
