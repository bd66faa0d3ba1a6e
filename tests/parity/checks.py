"""The parity scripts' checks: each prints "ok" or "FAIL" with what it compared; finish() reports and exits non-zero
when any failed."""
import sys

passed = [0]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if ok:
        passed[0] += 1
    else:
        failures.append(what)


def finish(name):
    print(f"{name}: {passed[0]} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
