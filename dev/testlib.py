"""The small check harness of the dev/test_*.py scripts: one line per check
("ok", "FAIL" or "SKIP" and the check's name), counts for the summary line,
and a fresh scratch directory."""

import os
import shutil
import time
import traceback


class Suite:
    def __init__(self):
        self.passed, self.failed, self.skipped = 0, 0, 0

    def check(self, name, fn):
        """Runs fn(); an exception is a failure, a result "skip: why" a skip,
        any other string is printed after the name."""
        start = time.time()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - report and go on
            self.failed += 1
            print("FAIL %s: %s" % (name, e))
            traceback.print_exc(limit=3)
            return
        if result == "skip" or (isinstance(result, str) and result.startswith("skip")):
            self.skipped += 1
            print("SKIP %s: %s" % (name, result))
        else:
            self.passed += 1
            print("ok   %s%s (%.1f s)" % (name, ": " + result if isinstance(result, str) else "", time.time() - start))


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def fresh_workdir(path):
    """path made absolute, emptied and created: a suite's scratch directory."""
    work = os.path.abspath(path)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    return work
