"""A million calls mixing every conversion; prints RSS (KiB) after a warm-up and at the end."""
import sys

import apus

probe = apus.load(sys.argv[1])
calls = int(sys.argv[2])


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


payload = {"a": [1, 2.5, "x", b"y", None, True, (3, 4)], "b": {"nested": ["deep"]}}
prices = {"apples": 1.25, "pears": 2.5}
data = b"0123456789" * 10


def round_(i: int) -> None:
    probe.add(i, 1)
    probe.scale([1.0, 2.0, 3.0], 0.5)
    probe.shout("hello")
    probe.reverse_bytes(data)
    probe.maybe_double(None if i & 1 else i)
    probe.totals(prices)
    probe.min_max([3, 1, 2])
    probe.identity(payload)
    probe.negate(True)
    probe.swap(("a", i))
    try:
        probe.add("wrong", 1)
    except TypeError:
        pass
    try:
        probe.withdraw(1, 2)
    except apus.SwiftError:
        pass


for i in range(calls // 20):
    round_(i)
before = rss_kib()
rounds = -(-calls // 12)  # 12 calls a round
for i in range(rounds):
    round_(i)
after = rss_kib()
print(before, after, rounds * 12)
