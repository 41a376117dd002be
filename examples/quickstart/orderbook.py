"""The CPU-heavy endpoint in Python: generate deterministic order-book records,
validate them and serialize them to compact JSON.

handlers/orderbook.swift does exactly the same, byte for byte: the records come
from SplitMix64 with integer arithmetic, so both languages see the same numbers.
"""

import json
import re

MASK = (1 << 64) - 1
SYMBOL = re.compile(r"^[A-Z]{1,8}$")


class SplitMix64:
    def __init__(self, seed: int) -> None:
        self.state = seed & MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def fnv1a(text: str) -> int:
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & MASK
    return value


def records(symbol: str, count: int) -> list[dict]:
    rng = SplitMix64(fnv1a(symbol))
    out = []
    for index in range(count):
        price_cents = 10_000 + rng.next() % 5_000
        qty = 1 + rng.next() % 1_000
        side = "buy" if rng.next() & 1 == 0 else "sell"
        out.append({"symbol": symbol, "price": price_cents / 100, "qty": qty, "side": side,
                    "ts": 1_700_000_000_000 + index * 137})
    return out


def validate(record: dict) -> None:
    if not SYMBOL.match(record["symbol"]):
        raise ValueError("symbol must be 1-8 upper-case letters")
    if not record["price"] > 0:
        raise ValueError("price must be positive")
    if not record["qty"] > 0:
        raise ValueError("qty must be positive")
    if record["side"] not in ("buy", "sell"):
        raise ValueError("side must be buy or sell")


def render(symbol: str, count: int = 200, dumps=None) -> bytes:
    if not SYMBOL.match(symbol):
        raise ValueError("symbol must be 1-8 upper-case letters")
    if not 1 <= count <= 10_000:
        raise ValueError("n must be between 1 and 10000")
    orders = records(symbol, count)
    total_qty = 0
    notional = 0.0
    for record in orders:
        validate(record)
        total_qty += record["qty"]
        notional += record["price"] * record["qty"]
    document = {"symbol": symbol, "count": count, "total_qty": total_qty, "notional": notional, "orders": orders}
    if dumps is not None:
        return dumps(document)
    return json.dumps(document, separators=(",", ":")).encode()
