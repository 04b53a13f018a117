#!/usr/bin/env python3
"""The pipeline bench's side-by-side baseline: a simple script poller.

It polls the way a shop's own cron script would, with Python's standard library alone: one
order at a time, it signs a `taobao.logistics.trace.search` request, POSTs it on a new
connection (urllib opens one for each request and closes it after the answer), reads the JSON
answer, and stores the order's status and the poll's time in SQLite, one commit per poll. The
SQLite settings are the daemon's defaults (WAL, synchronous = NORMAL), so the commit costs what
it costs the daemon.

Usage: script_poller.py URL DATABASE FIRST_TID COUNT APP_KEY APP_SECRET SESSION

It prints one line of JSON, {"polls": COUNT, "seconds": S}, timed from the first request to the
last commit: the interpreter's start-up and the table's setup are left out. Any answer that is
not a trace, and any failed request, ends it with exit code 1 and one line on stderr.
"""

import hashlib
import hmac
import json
import sqlite3
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone

TOP_TIME = timezone(timedelta(hours=8))


def sign(params, secret):
    """TOP's hmac-sha256 signature, as src/providers/taobao.rs makes it: the pairs sorted by
    key, concatenated as key + value, HMAC-SHA256 with the app secret, uppercase hex."""
    text = "".join(key + value for key, value in sorted(params.items()) if key and value)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest().upper()


def status_of(answer):
    """The order's status from the newest step of the trace, as a simple script reads it."""
    steps = answer.get("trace_list", {}).get("transit_step_info", [])
    action = steps[-1].get("action", "") if steps else ""
    if action in ("SIGNED", "TMS_SIGN"):
        return "delivered"
    if action == "TMS_DELIVERING":
        return "out_for_delivery"
    return "in_transit" if steps else "pending"


def poll(url, tid, app_key, secret, session):
    params = {
        "method": "taobao.logistics.trace.search",
        "app_key": app_key,
        "session": session,
        "timestamp": datetime.now(TOP_TIME).strftime("%Y-%m-%d %H:%M:%S"),
        "v": "2.0",
        "format": "json",
        "sign_method": "hmac-sha256",
        "tid": str(tid),
    }
    params["sign"] = sign(params, secret)
    body = urllib.parse.urlencode(params).encode()
    with urllib.request.urlopen(url, data=body, timeout=10) as response:
        answer = json.loads(response.read(1 << 20))
    if "logistics_trace_search_response" not in answer:
        raise RuntimeError(f"order {tid}: not a trace: {json.dumps(answer)[:300]}")
    return status_of(answer["logistics_trace_search_response"])


def main():
    if len(sys.argv) != 8:
        sys.exit(
            "usage: script_poller.py URL DATABASE FIRST_TID COUNT APP_KEY APP_SECRET SESSION"
        )
    url, database, first, count, app_key, secret, session = sys.argv[1:]
    first, count = int(first), int(count)
    db = sqlite3.connect(database)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(
        "CREATE TABLE orders (tid INTEGER PRIMARY KEY, status TEXT NOT NULL DEFAULT 'pending',"
        " last_polled_at TEXT)"
    )
    db.executemany("INSERT INTO orders (tid) VALUES (?)", ((first + i,) for i in range(count)))
    db.commit()

    started = time.perf_counter()
    for (tid,) in db.execute("SELECT tid FROM orders ORDER BY tid").fetchall():
        try:
            status = poll(url, tid, app_key, secret, session)
        except Exception as error:
            sys.exit(f"script poller: {error}")
        db.execute(
            "UPDATE orders SET status = ?, last_polled_at = ? WHERE tid = ?",
            (status, datetime.now(timezone.utc).isoformat(), tid),
        )
        db.commit()
    seconds = time.perf_counter() - started
    print(json.dumps({"polls": count, "seconds": seconds}))


if __name__ == "__main__":
    main()
