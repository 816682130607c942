"""explain in the service: `sigmatch run --watch FILE --lookup` as a real subprocess (one
worker or two) answers GET /subscriber/{msisdn}/explain?last=N with what an in-process
engine watching the same number says, and PUT / DELETE /watch/{msisdn} change the watch
list."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from engine import Engine
from loaders.lists import MSISDN_RULE, NOT_FOUND_HINT
from tests.test_daemon import free_port, start, stop, wait_until_drained, world  # noqa: F401

TOKEN = "explain-token"


def call(method, url):
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-worker", "2-workers"])
def test_the_service_explains_a_watched_subscriber(world, tmp_path, workers):  # noqa: F811
    generated, expected = world
    watched = int(expected.action_columns()["msisdn"][0])
    others = [int(m) for m in expected.action_columns()["msisdn"] if int(m) != watched]
    watch_file = tmp_path / "watch.txt"
    watch_file.write_text(f"{watched}\n999999999999\n")
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    spool.mkdir()
    port = free_port()
    proc = start(generated.config, out, state, spool, ready=True,
                 args=["--lookup", f"127.0.0.1:{port}", "--lookup-token", TOKEN, "--watch", str(watch_file), *workers])
    try:
        base = f"http://127.0.0.1:{port}"
        assert call("GET", f"{base}/watch") == (200, {"watched": [str(watched)], "max": 100, "ring": 200})
        for trace in generated.traces:          # as probes write: another name, then renamed
            temp = spool / f".{trace.name}.part"
            temp.write_bytes(trace.read_bytes())
            os.replace(temp, spool / trace.name)
        assert wait_until_drained(spool)
        engine = Engine.from_config(generated.config)
        engine.watch([watched])
        engine.replay(generated.traces)
        whole = engine.explanation(watched)
        assert whole["events"], "the watched number has events in the trace"
        deadline = time.monotonic() + 30
        while True:         # the last spool file is fed, then its records are taken
            status, body = call("GET", f"{base}/subscriber/{watched}/explain?last=3")
            if status == 200 and body["events"] == whole["events"][-3:] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200 and body["events"] == whole["events"][-3:]
        assert all({"ts", "type", "campaigns"} <= set(e) for e in body["events"])
        status, body = call("GET", f"{base}/subscriber/{watched}/explain")
        assert status == 200 and body["events"] == whole["events"][-200:]
        assert body["msisdn"] == str(watched)       # a string, as /watch gives it
        assert body["actions"] == [a for a in whole["actions"] if any(a in e["emissions"] for e in body["events"])]

        other = others[0]
        assert call("GET", f"{base}/subscriber/{other}/explain")[0] == 404
        assert call("PUT", f"{base}/watch/{other}") == (201, {"msisdn": str(other), "watched": True})
        status, body = call("GET", f"{base}/subscriber/{other}/explain")
        assert status == 200 and body["events"] == []      # nothing happened since watching began
        assert call("GET", f"{base}/watch")[1]["watched"] == [str(watched), str(other)]
        assert call("PUT", f"{base}/watch/999999999999")[0] == 404
        assert call("DELETE", f"{base}/watch/{other}") == (200, {"msisdn": str(other), "watched": False})
        assert call("GET", f"{base}/subscriber/{other}/explain")[0] == 404
        assert call("DELETE", f"{base}/watch/{other}")[0] == 404
        assert call("GET", f"{base}/subscriber/12x4/explain")[0] == 400
        # one rule with explain --msisdn and the profiles: spaces and dashes dropped, and a
        # country code typed before a national number makes another number, said so
        text = str(other)
        assert call("PUT", f"{base}/watch/{text[:3]}%20{text[3:7]}-{text[7:]}") == \
            (201, {"msisdn": text, "watched": True})
        status, body = call("PUT", f"{base}/watch/%2B86{text}")
        assert status == 404 and NOT_FOUND_HINT in body["error"]
        status, body = call("GET", f"{base}/subscriber/%2B86%20{text}")
        assert status == 404 and NOT_FOUND_HINT in body["error"]
        status, body = call("PUT", f"{base}/watch/abc")
        assert status == 400 and MSISDN_RULE in body["error"] and "e.g." not in body["error"]
        assert call("DELETE", f"{base}/watch/{other}")[0] == 200
        status, body = call("GET", f"{base}/subscriber/{watched}/explain?last=abc")
        assert status == 400 and body["parameter"] == "last"
    finally:
        assert stop(proc) == 0
    log = proc.stderr.read()
    assert "no subscriber" in log and str(watched) not in log and str(other) not in log
