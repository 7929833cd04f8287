#!/usr/bin/env python3
"""Viewers of the status page for bench/status_page.sh: N threads, each fetching the campaign page
and /api/status every PERIOD seconds (as the page's script and a script polling the API would), for
SECS seconds. Prints one JSON object: per path, its latencies in milliseconds and its errors.
`viewers.py --summary FILE...` reads such objects and prints, per path, the requests, errors and
latency percentiles over all of them (one line: "requests errors p50 p95 max" per path, in order).

    viewers.py BASE_URL CAMPAIGN_ID VIEWERS PERIOD SECS
    viewers.py --summary PAGE_PATH FILE...
"""
import json
import sys
import threading
import time
import urllib.request


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def main():
    base, campaign, viewers, period, secs = sys.argv[1:6]
    viewers, period, secs = int(viewers), float(period), float(secs)
    paths = [f"/campaigns/{campaign}", "/api/status"]
    samples = {p: [] for p in paths}
    errors = {p: 0 for p in paths}
    lock = threading.Lock()
    end = time.monotonic() + secs

    def viewer(offset):
        # Viewers arrive spread over one period, as people do.
        time.sleep(offset)
        while time.monotonic() < end:
            started = time.monotonic()
            for path in paths:
                t = time.monotonic()
                try:
                    with urllib.request.urlopen(base + path, timeout=10) as r:
                        r.read()
                        ok = r.status == 200
                except Exception:
                    ok = False
                ms = (time.monotonic() - t) * 1000.0
                with lock:
                    if ok:
                        samples[path].append(ms)
                    else:
                        errors[path] += 1
            time.sleep(max(0.0, period - (time.monotonic() - started)))

    threads = [threading.Thread(target=viewer, args=(i * period / viewers,)) for i in range(viewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"samples": samples, "errors": errors}))


def summary(page_path, files):
    samples, errors = {}, {}
    for name in files:
        with open(name) as f:
            d = json.load(f)
        for path, values in d["samples"].items():
            samples.setdefault(path, []).extend(values)
        for path, n in d["errors"].items():
            errors[path] = errors.get(path, 0) + n
    out = []
    for path in (page_path, "/api/status"):
        s = samples.get(path, [])
        out += [len(s), errors.get(path, 0), percentile(s, 50) or 0, percentile(s, 95) or 0, max(s) if s else 0]
    print(" ".join(str(x) for x in out))


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        summary(sys.argv[2], sys.argv[3:])
    else:
        main()
