"""Python → Swift call costs, measured with timeit (best of rounds, ns per call).

    .venv/bin/python bench/python_calls.py            # full run (~1 min)
    .venv/bin/python bench/python_calls.py --smoke    # a fraction of a second per row

Rows: a trivial exported Swift function vs a pure-Python function vs a C
function of the standard library (math.fsum on a small list); the quickstart's
order-book endpoint body (generate + validate + serialize 200 records) from
Swift vs Python with json.dumps and with orjson.dumps; and serializing the same
already-built Python document (conversion into Swift included) vs json.dumps
and orjson.dumps. Byte-identical output is checked before anything is timed.
"""

import argparse
import json
import math
import platform
import sys
import timeit
from datetime import date
from pathlib import Path

import orjson

import apus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "quickstart"))
import orderbook  # noqa: E402  (the quickstart's Python implementation)


def best_ns(statement, number: int, rounds: int) -> float:
    return min(timeit.repeat(statement, number=number, repeat=rounds)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    scale, rounds = (0.02, 2) if args.smoke else (1.0, 7)

    calls = apus.load(ROOT / "bench" / "python" / "calls.swift")
    book = apus.load(ROOT / "examples" / "quickstart" / "handlers" / "orderbook.swift")

    def py_add(a, b):
        return a + b

    small = [1.5, 2.25, 3.0, 4.75]
    document = json.loads(orderbook.render("ACME", 200))
    stdlib = json.dumps(document, separators=(",", ":")).encode()
    assert book.orderbook_json("ACME", 200) == orderbook.render("ACME", 200) == orderbook.render("ACME", 200, dumps=orjson.dumps)
    assert calls.dumps(document) == stdlib == orjson.dumps(document), "serializers disagree"

    rows = [
        ("call: Swift add(1, 2) (exported)", lambda: calls.add(1, 2), 2_000_000),
        ("call: Swift noop() (exported)", lambda: calls.noop(), 2_000_000),
        ("call: Python def add(1, 2)", lambda: py_add(1, 2), 2_000_000),
        ("call: math.fsum([4 floats]) (stdlib C)", lambda: math.fsum(small), 2_000_000),
        ("order book 200: Swift orderbook_json", lambda: book.orderbook_json("ACME", 200), 4_000),
        ("order book 200: Python + json.dumps", lambda: orderbook.render("ACME", 200), 1_000),
        ("order book 200: Python + orjson.dumps", lambda: orderbook.render("ACME", 200, dumps=orjson.dumps), 1_000),
        ("serialize doc: Swift dumps (incl. conversion)", lambda: calls.dumps(document), 4_000),
        ("serialize doc: json.dumps", lambda: json.dumps(document, separators=(",", ":")).encode(), 4_000),
        ("serialize doc: orjson.dumps", lambda: orjson.dumps(document), 20_000),
    ]
    # Each lambda adds the same small call cost to every row; timeit's own loop is not included.
    results = {}
    print(f"# Python → Swift, {date.today()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}{' (smoke)' if args.smoke else ''}")
    print(f"{'what':50} {'ns/call':>12}")
    for name, statement, number in rows:
        results[name] = best_ns(statement, max(1, int(number * scale)), rounds)
        print(f"{name:50} {results[name]:12,.0f}")
    swift_book = results["order book 200: Swift orderbook_json"]
    print(f"order book: Swift is {results['order book 200: Python + json.dumps'] / swift_book:.1f}x Python+json, "
          f"{results['order book 200: Python + orjson.dumps'] / swift_book:.1f}x Python+orjson")
    print(f"trivial call overhead: Swift add {results['call: Swift add(1, 2) (exported)']:.0f} ns vs Python "
          f"{results['call: Python def add(1, 2)']:.0f} ns vs math.fsum {results['call: math.fsum([4 floats]) (stdlib C)']:.0f} ns")


if __name__ == "__main__":
    main()
