"""The console's editing: tomlkit edits that keep the engineer's file, forms generated from the
schema and validated by check's code, versions with maker-checker approval, conflicts,
rollback, applying to the live file and the service's reload (issue 13, H2's part)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("tomlkit")

from engine.console import forms                                    # noqa: E402
from engine.console.configfile import ConfigFile, EditError          # noqa: E402
from engine.console.versions import (ApprovalRefused, Conflict, DiffRow, ReloadResult, VersionError, Versions,  # noqa: E402
                                     diff_texts, is_sigmatch_run, reload_result, send_reload)
from engine.language import schema                                   # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def world(tmp_path):
    """examples/crbt_school copied: a live file with comments, lists, an area and profiles."""
    root = tmp_path / "world"
    shutil.copytree(EXAMPLES / "crbt_school", root, ignore=shutil.ignore_patterns("*.py", "*.msgpack", "README*"))
    return root / "campaigns.toml"


@pytest.fixture
def store(tmp_path):
    from engine.console.store import Store
    s = Store(tmp_path / "console.db")
    yield s
    s.close()


def _clock():
    n = iter(range(10_000))
    return lambda: f"2026-11-30T12:{next(n) // 60:02d}:{next(n) % 60:02d}Z"


@pytest.fixture
def versions(store, world):
    return Versions(store, world, now=_clock())


def submitted_for(section, table, **changes):
    """What a browser submits for a form showing `table`, with `changes` made to the inputs."""
    shown = forms.current_inputs(section, table)
    out = {k: v for k, v in shown.items() if v not in ("false", [], "")}
    out[forms.SHOWN] = [f.name for f in forms.form_fields(section, {}) if f.widget in ("checkbox", "multi")]
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def edit_campaign(cid, **changes):
    def edit(doc: ConfigFile):
        doc.set_campaign(cid, forms.read_form("campaign", submitted_for("campaign", doc.campaign(cid), **changes),
                                              doc.campaign(cid)))
    return edit


def inputs_of(doc: ConfigFile, cid: str) -> frozenset:
    table = doc.campaign(cid)
    return frozenset(f.name for f in forms.form_fields("campaign", forms.options_from(doc.values()),
                                                       forms.rows_of("campaign", table)))


# ---------------------------------------------------------------------------- the file
def test_an_edit_keeps_every_comment_and_untouched_line(world):
    text = world.read_text()
    doc = ConfigFile(text)
    doc.set_campaign("crbt_school", {"template": "CRBT_OFFER_2", "cooldown": "14d", "peer_in": None})
    new = doc.text
    comments = [line[line.index("#"):] for line in text.splitlines() if "#" in line and "peer_in" not in line]
    for comment in comments:
        assert comment in new
    assert 'template = "CRBT_OFFER_2"' in new.replace("  ", " ").replace("  ", " ") or "CRBT_OFFER_2" in new
    before, after = tomllib.loads(text), tomllib.loads(new)
    changed = {k for k in set(before["campaign"][0]) | set(after["campaign"][0])
               if before["campaign"][0].get(k) != after["campaign"][0].get(k)}
    assert changed == {"template", "cooldown", "peer_in"}
    assert {k: v for k, v in before.items() if k != "campaign"} == {k: v for k, v in after.items() if k != "campaign"}
    # a key added goes with the table's keys, aligned like them, not after the next comment
    lines = new.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("cooldown"))
    assert lines[at].startswith("cooldown = ") and lines[at - 1].split("=")[0].strip() in tomllib.loads(new)["campaign"][0]


def test_add_clone_pause_schedule_reorder(world):
    doc = ConfigFile(world.read_text())
    doc.add_campaign({"id": "welcome", "on": ["POWER_ON"], "channel": "sms", "template": "HELLO"})
    doc.clone_campaign("crbt_school", "crbt_school_b")
    doc.pause("crbt_school")
    doc.schedule("welcome", "2027-02-05", "2027-02-12")
    read = tomllib.loads(doc.text)
    by_id = {c["id"]: c for c in read["campaign"]}
    assert by_id["crbt_school"]["enabled"] is False
    assert by_id["crbt_school_b"]["enabled"] is False          # a clone waits until someone turns it on
    assert {k: v for k, v in by_id["crbt_school_b"].items() if k not in ("id", "enabled")} == \
        {k: v for k, v in by_id["crbt_school"].items() if k not in ("id", "enabled")}
    assert (by_id["welcome"]["start"], by_id["welcome"]["end"]) == ("2027-02-05", "2027-02-12")
    doc.pause("crbt_school", paused=False)
    assert "enabled" not in doc.campaign("crbt_school")
    order = ["welcome", "crbt_school_b", "recharge_thanks", "crbt_school"]
    doc.reorder(order)
    read = tomllib.loads(doc.text)["campaign"]
    assert sorted(read, key=lambda c: (-c.get("priority", 0), c["id"])) == sorted(
        read, key=lambda c: order.index(c["id"]))
    with pytest.raises(EditError):
        doc.reorder(["welcome"])
    with pytest.raises(EditError):
        doc.add_campaign({"id": "welcome", "on": ["SMS_MO"], "channel": "sms"})
    with pytest.raises(EditError):
        doc.set_campaign("nosuch", {"template": "x"})


def test_sections_are_edited_in_place(world):
    doc = ConfigFile(world.read_text())
    doc.set_table("policy", {"max_in_window": {"contacts": 3, "window": "7d"}, "max_per_day": None})
    doc.set_entry("counters", "sms", {"on": ["SMS_MO"], "period": "day"}, new=True)
    doc.set_entry("counters", "sms", {"period": None, "window": "30d"})
    doc.set_entry("markers", "recharged", {"on": ["RECHARGE"]}, new=True)
    doc.set_entry("channels", "sms", {"daily_budget": 1000}, new=True)
    doc.set_map("lists", "vip", "lists/dnd.txt")
    read = tomllib.loads(doc.text)
    assert read["policy"]["max_in_window"] == {"contacts": 3, "window": "7d"} and "max_per_day" not in read["policy"]
    assert read["counters"]["sms"] == {"on": ["SMS_MO"], "window": "30d"}
    assert read["markers"]["recharged"] == {"on": ["RECHARGE"]}
    assert read["channels"]["sms"] == {"daily_budget": 1000}
    assert read["lists"]["vip"] == "lists/dnd.txt"
    assert "# global do-not-disturb list" in doc.text
    doc.remove_entry("counters", "sms")
    assert "sms" not in tomllib.loads(doc.text)["counters"]


def test_values_cannot_smuggle_toml_into_the_file(world):
    doc = ConfigFile(world.read_text())
    sneaky = 'X"\n[[campaign]]\nid = "evil'
    doc.set_campaign("crbt_school", {"template": sneaky})
    read = tomllib.loads(doc.text)
    assert [c["id"] for c in read["campaign"]] == ["crbt_school", "recharge_thanks"]
    assert read["campaign"][0]["template"] == sneaky           # a string, escaped: never TOML
    # ... and the form refuses it before that: a one-line value holds no control characters
    table = doc.campaign("crbt_school")
    for key in ("id", "template", "where"):
        with pytest.raises(forms.FormValueError) as e:
            forms.read_form("campaign", submitted_for("campaign", table, **{key: 'a"\n[[campaign]]'}), table)
        assert e.value.name == key
    with pytest.raises(forms.FormValueError):
        forms.read_form("engine", {"null_values": '[""]\nprofiles = "/etc/passwd"'}, {})


# ---------------------------------------------------------------------------- the form
def test_every_key_of_the_schema_has_an_input():
    """A key added to engine/language/schema.py appears in the console's forms by itself."""
    options = forms.options_from({})
    keys = set()
    for section in schema.SECTIONS:
        if section.shape == "map":
            keys |= {f.key.split(".<")[0] for f in forms.entry_fields(section.name, options)}
            keys.add(section.name)
        else:
            for f in forms.form_fields(section.name, options):
                keys.add(f.key)
                if f.group is not None:         # the nested table's own key
                    keys.add(f.key.rsplit(".", 1)[0])
    for path, field in schema.all_fields():
        assert path in keys, f"schema key {path} has no input in the console's forms"
    assert {s.name for s in schema.SECTIONS} <= keys | {s.name for s in schema.SECTIONS if s.shape != "map"}


def test_inputs_offer_what_the_configuration_defines(world):
    doc = ConfigFile(world.read_text())
    doc.set_entry("counters", "sms", {"on": ["SMS_MO"]}, new=True)
    doc.set_entry("markers", "recharged", {"on": ["RECHARGE"]}, new=True)
    doc.set_map("event_types", "LOW_BALANCE", 40)
    options = forms.options_from(doc.values())
    by_name = {f.name: f for f in forms.form_fields("campaign", options)}
    assert by_name["audience"].options == ("dnd", "crbt_targets", "crbt_peers")
    assert by_name["exclude"].widget == "multi" and by_name["exclude"].options == by_name["audience"].options
    assert by_name["area"].options == ("schools",)
    assert by_name["counter.name"].options == ("sms",)
    assert by_name["after.0.marker"].options == ("recharged",)
    assert by_name["absent"].options == ("recharged",)
    assert "LOW_BALANCE" in by_name["on"].options and "CALL_MO_END" in by_name["on"].options
    assert by_name["recheck"].options == schema.RECHECK_RULES
    assert by_name["enabled"].widget == "checkbox" and by_name["id"].required


def test_an_untouched_form_changes_nothing_and_an_emptied_input_removes_its_key(world):
    doc = ConfigFile(world.read_text())
    table = doc.campaign("crbt_school")
    assert forms.read_form("campaign", submitted_for("campaign", table), table) == {}
    changes = forms.read_form("campaign", submitted_for("campaign", table, where="", priority="7",
                                                        holdout="0.1", once="on"), table)
    assert changes == {"where": None, "priority": 7, "holdout": 0.1, "once": True}


@pytest.mark.parametrize("inputs, field, words", [
    ({"priority": "high"}, "priority", "expected an integer"),
    ({"holdout": "0.00005"}, "holdout", "multiple of"),
    ({"hours": "9-18"}, "hours", "hours like"),
    ({"not_after.0.marker": "roamed", "not_after.0.within": "0s"}, "not_after.0.marker", "unknown marker"),
    ({"counter.name": "calls", "counter.at_least": "2"}, "counter.name", "unknown counter"),
    ({"counter.at_least": "3"}, "counter.name", "needs name and at_least"),
    ({"where": "arpu >= 50 and nosuch > 1"}, "where", "unknown attribute 'nosuch'"),
    ({"where": "__import__('os').system('true')"}, "where", ""),
    ({"audience": "crbt_target"}, "audience", "did you mean"),
    ({"id": "crbt school"}, "id", "not a valid campaign id"),
    ({"on": []}, "on", "at least one"),
    ({"end": "2027-01-01", "start": "2027-02-01"}, "end", "before start"),
])
def test_errors_come_from_checks_code_beside_their_input(world, inputs, field, words):
    doc = ConfigFile(world.read_text())
    cid = "crbt_school"
    names = inputs_of(doc, cid)
    table = doc.campaign(cid)
    changes = forms.read_form("campaign", submitted_for("campaign", table, **inputs), table)
    doc.set_campaign(cid, changes)
    new_id = changes.get("id", cid)
    errors = forms.validate(world, doc.text, section="campaign", entry=new_id if isinstance(new_id, str) else cid,
                            inputs=names)
    assert field in errors.fields, errors
    assert words in errors.fields[field]
    assert not errors.general
    assert not [p for p in world.parent.iterdir() if ".draft-" in p.name]      # the draft is gone
    # the same text, refused by `sigmatch check` itself with the same words
    bad = world.with_name("bad.toml")
    bad.write_text(doc.text)
    run = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(bad)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent) if words == "before start" else None
    if run is not None:
        assert run.returncode != 0 and "before start" in run.stderr


def test_an_error_elsewhere_in_the_file_is_shown_above_the_form(world):
    doc = ConfigFile(world.read_text())
    doc.set_table("policy", {"min_gap": "seven days"})
    errors = forms.validate(world, doc.text, section="campaign", entry="crbt_school",
                            inputs=inputs_of(doc, "crbt_school"))
    assert not errors.fields and "policy.min_gap" in errors.general[0] and str(world) in errors.general[0]


# ---------------------------------------------------------------------------- versions
def test_a_save_is_a_version_with_author_time_and_why(versions, world):
    live = versions.baseline()
    assert live["state"] == "live" and live["text"] == world.read_text()
    with pytest.raises(VersionError, match="why"):
        versions.save("alice", "  ", live["id"], "crbt_school", edit_campaign("crbt_school", template="B"))
    v, errors = versions.save("alice", "test a new text", live["id"], "crbt_school",
                              edit_campaign("crbt_school", template="B"))
    assert not errors and v["author"] == "alice" and v["why"] == "test a new text" and v["state"] == "draft"
    assert v["created_at"].endswith("Z") and v["parent"] == live["id"] and v["line"] == "crbt_school"
    assert world.read_text() == live["text"]                    # a draft never touches the live file
    with pytest.raises(VersionError, match="nothing changed"):
        versions.save("alice", "again", v["id"], "crbt_school", edit_campaign("crbt_school", template="B"))


def test_an_invalid_draft_is_not_saved_and_the_live_file_never_changes(versions, world):
    live = versions.baseline()
    before = world.read_bytes()
    v, errors = versions.save("alice", "typo", live["id"], "crbt_school", edit_campaign("crbt_school", hours="9-6"),
                              inputs=inputs_of(ConfigFile(world.read_text()), "crbt_school"))
    assert v is None and "hours" in errors.fields
    assert len(versions.all()) == 1 and world.read_bytes() == before


def test_two_editors_on_one_campaign_conflict_on_others_they_merge(versions, world):
    base = versions.baseline()["id"]
    versions.save("alice", "new template", base, "crbt_school", edit_campaign("crbt_school", template="A"))
    with pytest.raises(Conflict, match="alice saved version"):
        versions.save("bob", "new cooldown", base, "crbt_school", edit_campaign("crbt_school", cooldown="3d"))
    mine, _ = versions.save("bob", "tighter policy", base, "policy", lambda d: d.set_table("policy", {"max_per_day": 1}))
    read = tomllib.loads(mine["text"])
    assert read["campaign"][0]["template"] == "A" and read["policy"]["max_per_day"] == 1   # built on alice's
    with pytest.raises(Conflict):
        versions.rollback("bob", "undo", base, base)        # the whole file meets every line


def test_maker_checker(versions, world):
    base = versions.baseline()["id"]
    v2, _ = versions.save("alice", "new template", base, "crbt_school", edit_campaign("crbt_school", template="A"))
    v3, _ = versions.save("bob", "tighter", v2["id"], "policy", lambda d: d.set_table("policy", {"max_per_day": 1}))
    with pytest.raises(ApprovalRefused, match="alice authored version"):
        versions.approve(v2["id"], "alice")
    # bob built on alice's draft: approving v3 would make his change live with no second pair of eyes
    assert versions.approval_blockers(v3["id"], "bob")
    assert versions.approval_blockers(v3["id"], "alice")          # and v3 carries alice's change
    assert not versions.approval_blockers(v2["id"], "bob")
    assert world.read_text() == versions.get(base)["text"]
    live = versions.approve(v3["id"], "carol", "ok")
    assert live["state"] == "live" and live["applied_by"] == "carol"
    assert world.read_text() == v3["text"]
    assert world.with_name("campaigns.toml.prev").read_text() == versions.get(base)["text"]
    assert oct(world.stat().st_mode & 0o777) == "0o640"
    assert versions.get(v2["id"])["state"] == "superseded" and versions.get(base)["state"] == "replaced"
    assert [a["decision"] for a in versions.approvals(v3["id"])] == ["approved"]
    with pytest.raises(ApprovalRefused, match="not a draft"):
        versions.approve(v3["id"], "dave")


def test_approve_refuses_a_version_that_no_longer_validates(versions, world):
    base = versions.baseline()["id"]
    v, _ = versions.save("alice", "peer list", base, "crbt_school", edit_campaign("crbt_school", exclude=["dnd"]))
    (world.parent / "lists" / "dnd.txt").unlink()
    before = world.read_bytes()
    with pytest.raises(VersionError, match="no longer validates"):
        versions.approve(v["id"], "carol")
    assert world.read_bytes() == before and versions.get(v["id"])["state"] == "draft"


def test_a_hand_edit_of_the_live_file_becomes_a_version(versions, world):
    base = versions.baseline()["id"]
    v, _ = versions.save("alice", "template", base, "crbt_school", edit_campaign("crbt_school", template="A"))
    world.write_text(world.read_text().replace('max_per_day = 2', 'max_per_day = 3'))
    with pytest.raises(VersionError, match="changed outside the console"):
        versions.approve(v["id"], "carol")
    assert versions.live()["author"] == "(file)" and "max_per_day = 3" in versions.live()["text"]


def test_rollback_is_a_version_approved_the_same_way(versions, world):
    base = versions.baseline()
    v2, _ = versions.save("alice", "template", base["id"], "crbt_school", edit_campaign("crbt_school", template="A"))
    versions.approve(v2["id"], "carol")
    back, _ = versions.rollback("alice", "the old text sold better", base["id"], v2["id"])
    assert back["text"] == base["text"] and back["line"] is None and back["state"] == "draft"
    with pytest.raises(ApprovalRefused):
        versions.approve(back["id"], "alice")
    versions.approve(back["id"], "carol")
    assert world.read_text() == base["text"] and world.with_name("campaigns.toml.prev").read_text() == v2["text"]
    with pytest.raises(ApprovalRefused, match="older than the live"):
        versions.approve(base["id"], "carol")


def test_a_rejected_draft_is_dropped_from_later_saves(versions, world):
    base = versions.baseline()["id"]
    v2, _ = versions.save("alice", "template", base, "crbt_school", edit_campaign("crbt_school", template="A"))
    versions.reject(v2["id"], "carol", "off brand")
    v3, _ = versions.save("bob", "policy", base, "policy", lambda d: d.set_table("policy", {"max_per_day": 1}))
    assert tomllib.loads(v3["text"])["campaign"][0]["template"] == "CRBT_OFFER_1"
    assert not versions.approval_blockers(v3["id"], "alice")


def test_rejecting_ones_own_draft_does_not_let_one_approve_a_draft_built_on_it(versions, world):
    # carol (approver) saves a change, bob's save is built on it, carol rejects her own draft:
    # bob's draft still holds her change, so approving it would be carol checking herself
    base = versions.baseline()["id"]
    v2, _ = versions.save("carol", "mine", base, "crbt_school", edit_campaign("crbt_school", template="A"))
    v3, _ = versions.save("bob", "policy", base, "policy", lambda d: d.set_table("policy", {"max_per_day": 1}))
    assert tomllib.loads(v3["text"])["campaign"][0]["template"] == "A"
    assert versions.reject(v2["id"], "carol", "never mind") == [v3["id"]]
    assert versions.get(v3["id"])["state"] == "rejected"        # the drafts built on it go with it
    assert [a["note"] for a in versions.approvals(v3["id"])] == [f"built on version {v2['id']}, rejected"]
    with pytest.raises(ApprovalRefused):
        versions.approve(v3["id"], "carol")
    assert versions.head()["id"] == base                        # the next save starts without carol's change
    v4, _ = versions.save("bob", "policy again", base, "policy", lambda d: d.set_table("policy", {"max_per_day": 1}))
    assert tomllib.loads(v4["text"])["campaign"][0]["template"] == "CRBT_OFFER_1"
    # a database where a draft outlived the rejection of the one it was built on (made
    # before rejections carried over): its author still may not approve the later one
    versions.store.execute("UPDATE versions SET state = 'draft' WHERE id = ?", (v3["id"],))
    assert any("carol authored version" in b for b in versions.approval_blockers(v3["id"], "carol"))
    assert not versions.approval_blockers(v4["id"], "carol")
    versions.store.execute("UPDATE versions SET state = 'rejected' WHERE id = ?", (v3["id"],))


def test_a_rollback_to_a_draft_no_one_approved_is_not_approved_by_its_authors(versions, world):
    # bob's draft was rejected with carol's, which it was built on; bob rolls back to it to
    # recover his work: its text holds carol's change, which no one else has approved
    base = versions.baseline()["id"]
    v2, _ = versions.save("carol", "mine", base, "crbt_school", edit_campaign("crbt_school", template="A"))
    v3, _ = versions.save("bob", "policy", base, "policy", lambda d: d.set_table("policy", {"max_per_day": 1}))
    versions.reject(v2["id"], "carol", "never mind")
    back, _ = versions.rollback("bob", "my policy again", v3["id"], base)
    assert back["restores"] == v3["id"] and tomllib.loads(back["text"])["campaign"][0]["template"] == "A"
    assert any("carol authored version 2," in b for b in versions.approval_blockers(back["id"], "carol"))
    with pytest.raises(ApprovalRefused):
        versions.approve(back["id"], "carol")
    versions.approve(back["id"], "dave")
    # a rollback to a version that was live: its changes were approved when it went live
    v5, _ = versions.save("carol", "B", back["id"], "crbt_school", edit_campaign("crbt_school", template="B"))
    versions.approve(v5["id"], "dave")
    again, _ = versions.rollback("bob", "A was better", back["id"], v5["id"])
    assert not versions.approval_blockers(again["id"], "carol")


def test_diff_is_key_by_key(versions, world):
    base = versions.baseline()
    v, _ = versions.save("alice", "x", base["id"], "crbt_school",
                         edit_campaign("crbt_school", template="A", stop_after="3", where=""))
    rows = diff_texts(base["text"], v["text"])
    assert {(r.where, r.key) for r in rows} == {("campaign crbt_school", "template"),
                                                ("campaign crbt_school", "stop_after"),
                                                ("campaign crbt_school", "where")}
    by_key = {r.key: r for r in rows}
    assert by_key["template"].b == '"A"' and by_key["stop_after"].a == "" and by_key["where"].b == ""
    assert len(diff_texts(base["text"], v["text"], changed_only=False)) > len(rows)


# ---------------------------------------------------------------------------- the reload
def test_reload_is_sent_only_to_a_sigmatch_process(tmp_path):
    assert send_reload(None).state == "not_sent"
    pid_file = tmp_path / "pid"
    pid_file.write_text("not a number")
    assert send_reload(pid_file).state == "not_sent"
    other = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(str(other.pid))
        result = send_reload(pid_file)
        assert result.state == "not_sent" and "not sigmatch" in result.message
        assert other.poll() is None                      # untouched
    finally:
        other.kill()
        other.wait()
    pid_file.write_text(str(other.pid))
    assert send_reload(pid_file).state == "not_sent"     # gone
    # a pid reused by a program that merely names sigmatch: SIGHUP would end it
    (tmp_path / "sigmatch.log").write_text("")
    for argv in (["tail", "-f", str(tmp_path / "sigmatch.log")], [sys.executable, "-c", "import time; time.sleep(30)",
                                                                    "sigmatch", "run"]):
        other = subprocess.Popen(argv)
        try:
            pid_file.write_text(str(other.pid))
            result = send_reload(pid_file)
            assert result.state == "not_sent" and "not sigmatch run" in result.message, argv
            assert other.poll() is None
        finally:
            other.kill()
            other.wait()
    for argv in (["/usr/bin/python3", "/venv/bin/sigmatch", "-v", "run", "live.toml"], ["sigmatch", "run"],
                 ["sigmatch", "--log-format", "json", "-v", "run", "c.toml"], ["sigmatch", "--log-format=json", "run"],
                 ["/usr/bin/python3", "-m", "engine.cli", "run", "live.toml", "--spool", "s"]):
        assert is_sigmatch_run([a.encode() for a in argv]), argv
    for argv in (["vim", "/etc/sigmatch/campaigns.toml"], ["sigmatch", "console", "--config", "c"],
                 ["sigmatch", "console", "--data", "run"], ["sigmatch", "--log-format", "run", "console"],
                 ["python3", "-m", "engine.cli", "console"], ["bash", "-c", "sigmatch run"]):
        assert not is_sigmatch_run([a.encode() for a in argv]), argv


def test_the_services_answer_is_worded_for_the_version_page():
    assert reload_result("succeeded").state == "reloaded"
    assert reload_result("rejected").state == "rejected"
    unknown = reload_result("unknown: the service did not report a reload within 30 s")
    assert unknown.state == "unknown" and unknown.message == \
        "reload sent, result unknown: the service did not report a reload within 30 s"
    assert reload_result("unknown: reload sent, result unknown (the console was started without --metrics)"
                         ).message.count("reload sent") == 1


def test_a_refused_reload_marks_the_version(versions, world):
    base = versions.baseline()["id"]
    v, _ = versions.save("alice", "x", base, "crbt_school", edit_campaign("crbt_school", template="A"))
    versions.approve(v["id"], "carol")
    versions.record_reload(v["id"], ReloadResult("rejected", "the service refused to reload it"))
    assert versions.get(v["id"])["state"] == "reload_failed"
    assert versions.get(v["id"])["reload"] == "the service refused to reload it"


# ---------------------------------------------------------------------------- the pages
PASSWORD = "correct horse"


@pytest.fixture
def app(world, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("argon2")
    from engine.console.app import create_app
    from engine.console.auth import hash_password
    from engine.console.settings import Settings
    (tmp_path / "data").mkdir()
    app = create_app(Settings(config=world, data=tmp_path / "data"))
    for name, role in (("vera", "viewer"), ("ed", "editor"), ("eve", "editor"), ("ann", "approver"),
                       ("amy", "approver")):
        app.state.store.add_user(name, role, hash_password(PASSWORD))
    yield app
    app.state.store.close()


def _token(page: str) -> str:
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start:page.index('"', start)]


def _base_of(page: str) -> str:
    marker = 'name="base" value="'
    start = page.index(marker) + len(marker)
    return page[start:page.index('"', start)]


def user(app, name):
    from fastapi.testclient import TestClient
    client = TestClient(app, follow_redirects=False)
    page = client.get("/login").text
    answer = client.post("/login", data={"name": name, "password": PASSWORD, "next": "/",
                                         "csrf_token": _token(page)})
    assert answer.status_code == 303
    return client


def post_form(client, path, page_path, **fields):
    """Submit the form of `page_path` as the browser would, its inputs as shown with `fields` changed."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    data = {"csrf_token": _token(page.text), "base": _base_of(page.text)}
    data.update(fields)
    return client.post(path, data=data)


def campaign_form(client, cid, **changes):
    """The edit form of campaign `cid` submitted with `changes` (names as the inputs')."""
    doc = ConfigFile(Path(client.app.state.settings.config).read_text())
    shown = submitted_for("campaign", doc.campaign(cid), **changes)
    return post_form(client, f"/campaigns/{cid}/edit", f"/campaigns/{cid}/edit", **shown)


def test_the_form_shows_every_input_and_an_error_beside_its_field(app, world):
    ed = user(app, "ed")
    page = ed.get("/campaigns/crbt_school/edit").text
    for f in forms.form_fields("campaign", forms.options_from(ConfigFile(world.read_text()).values())):
        assert f'id="field-{f.name}"' in page, f.name
    before = world.read_bytes()
    answer = campaign_form(ed, "crbt_school", hours="9-18", why="shorter hours")
    assert answer.status_code == 400
    assert 'id="error-hours"' in answer.text and "hours like" in answer.text
    assert 'value="9-18"' in answer.text                          # what was typed stays in the form
    assert world.read_bytes() == before
    answer = campaign_form(ed, "crbt_school", hours="09:00-17:00", why="shorter hours")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/versions/")
    page = ed.get(answer.headers["location"]).text
    assert "shorter hours" in page and "09:00-17:00" in page and world.read_bytes() == before


def test_a_viewer_cannot_edit_and_a_save_needs_a_why(app, world):
    vera = user(app, "vera")
    assert campaign_form(vera, "crbt_school", template="X", why="mine").status_code == 403
    ed = user(app, "ed")
    answer = campaign_form(ed, "crbt_school", template="X", why="")
    assert answer.status_code == 400 and "why" in answer.text


def test_injection_through_the_form_is_refused(app, world):
    ed = user(app, "ed")
    for key, value in (("id", 'x"]\n[[campaign]]'), ("template", "A\nB"), ("where", "arpu > 1 or open('x')")):
        answer = campaign_form(ed, "crbt_school", **{key: value}, why="try")
        assert answer.status_code == 400 and f'id="error-{key}"' in answer.text, key
    assert len(versions_of_app(app).all()) == 1


def versions_of_app(app):
    return Versions(app.state.store, app.state.settings.config)


def test_second_editor_gets_a_conflict(app, world):
    ed, eve = user(app, "ed"), user(app, "eve")
    page_ed = ed.get("/campaigns/crbt_school/edit").text
    page_eve = eve.get("/campaigns/crbt_school/edit").text
    doc = ConfigFile(world.read_text())
    for client, page, template in ((ed, page_ed, "ED"), (eve, page_eve, "EVE")):
        data = submitted_for("campaign", doc.campaign("crbt_school"), template=template)
        data.update(csrf_token=_token(page), base=_base_of(page), why=f"{template}'s text")
        answer = client.post("/campaigns/crbt_school/edit", data=data)
        if template == "ED":
            assert answer.status_code == 303
        else:
            assert answer.status_code == 409 and "conflict" in answer.text and "ed saved version" in answer.text
    assert [tomllib.loads(v["text"])["campaign"][0]["template"] for v in versions_of_app(app).all()] == \
        ["ED", "CRBT_OFFER_1"]


def test_new_clone_pause_schedule_move_and_sections(app, world):
    ed = user(app, "ed")
    for no_id in ("", "  "):
        # said beside the id's input, not above the form by the table's index
        answer = post_form(ed, "/campaigns/new", "/campaigns/new", id=no_id, on=["POWER_ON"], channel="sms",
                           enabled="true", why="greet new phones")
        assert answer.status_code == 400 and 'id="error-id"' in answer.text, answer.text
        assert "every campaign needs an id" in answer.text and 'id="general-errors"' not in answer.text
    answer = post_form(ed, "/campaigns/new", "/campaigns/new", id="welcome", on=["POWER_ON"], channel="sms",
                       enabled="true", why="greet new phones")
    assert answer.status_code == 303, answer.text
    for path, fields in (("/campaigns/welcome/clone", {"new_id": "welcome_b"}), ("/campaigns/welcome/pause", {}),
                         ("/campaigns/welcome/schedule", {"start": "2027-02-05", "end": "2027-02-12"}),
                         ("/campaigns/welcome/move", {"direction": "up"})):
        answer = post_form(ed, path, "/configuration", why=f"test {path}", **fields)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/versions/"), \
            (path, ed.get("/configuration").text.split("<main>")[1][:500])
    answer = post_form(ed, "/configuration/policy", "/configuration/policy", **{"max_in_window.contacts": "3",
                                                               "max_in_window.window": "7d",
                                                               "blacklist": ["dnd"], "quiet_hours": "22:00-08:00",
                                                               "min_gap": "7d", "max_per_day": "2"},
                       why="rolling cap")
    assert answer.status_code == 303, answer.text
    answer = post_form(ed, "/configuration/counters/new", "/configuration/counters/new", name="sms", on=["SMS_MO"], period="day",
                       why="count texts")
    assert answer.status_code == 303, answer.text
    answer = post_form(ed, "/configuration/channels/new", "/configuration/channels/new", name="sms", daily_budget="0",
                       why="cap sms")
    assert answer.status_code == 400 and 'id="error-daily_budget"' in answer.text
    answer = post_form(ed, "/configuration/lists", "/configuration/lists", name="vip", value="lists/missing.txt", why="vip list")
    # a file that is missing is named with its key (lists.vip): shown beside the value's input
    assert answer.status_code == 400 and 'id="error-value"' in answer.text, answer.text
    assert "missing.txt: no such list file" in answer.text and 'id="general-errors"' not in answer.text
    # what was typed is there to correct, not to type again
    assert 'name="value" value="lists/missing.txt"' in answer.text and 'name="name" value="vip"' in answer.text
    assert 'name="why" size="70" maxlength="2000" value="vip list"' in answer.text
    answer = post_form(ed, "/configuration/lists", "/configuration/lists", name="v i p", value="lists/dnd.txt", why="vip list")
    # a name refused is said beside the name (helper-123: it was said beside the value)
    assert answer.status_code == 400 and 'id="error-name"' in answer.text and "not a valid list name" in answer.text
    assert 'id="error-value"' not in answer.text
    head = tomllib.loads(versions_of_app(app).head()["text"])
    by_id = {c["id"]: c for c in head["campaign"]}
    assert by_id["welcome"]["enabled"] is False and by_id["welcome_b"]["enabled"] is False
    assert by_id["welcome"]["start"] == "2027-02-05"
    assert head["policy"]["max_in_window"] == {"contacts": 3, "window": "7d"}
    assert head["counters"]["sms"] == {"on": ["SMS_MO"], "period": "day"}
    order = [c["id"] for c in sorted(head["campaign"], key=lambda c: (-c.get("priority", 0), c["id"]))]
    assert order.index("welcome") < order.index("welcome_b")
    assert {e["action"] for e in app.state.store.audit_entries()} >= {
        "campaign.new", "campaign.clone", "campaign.pause", "campaign.schedule", "campaign.reorder", "policy.edit",
        "counters.new"}


def test_approve_applies_and_reports_the_reload(app, world, tmp_path):
    ed, ann, amy = user(app, "ed"), user(app, "ann"), user(app, "amy")
    saved = campaign_form(ed, "crbt_school", template="NEW", why="new offer")
    vid = saved.headers["location"].rsplit("/", 1)[1]
    page = ed.get(f"/versions/{vid}").text
    assert 'id="approve"' not in page                            # an editor does not approve
    assert ed.post(f"/versions/{vid}/approve", data={"csrf_token": _token(page)}).status_code == 403
    # ann built nothing here: she may approve
    page = ann.get(f"/versions/{vid}").text
    assert 'id="approve"' in page and "NEW" in page
    answer = ann.post(f"/versions/{vid}/approve", data={"csrf_token": _token(page), "note": "fine"})
    assert answer.status_code == 303
    assert 'template = "NEW"' in world.read_text().replace("  ", " ").replace("  ", " ").replace("  ", " ") or \
        tomllib.loads(world.read_text())["campaign"][0]["template"] == "NEW"
    page = ann.get(f"/versions/{vid}").text
    assert "no --daemon-pid" in page and 'id="version-state">live' in page
    # an approver who saved a version cannot approve it, nor one built on it
    saved = campaign_form(ann, "crbt_school", template="ANN", why="ann's offer")
    vid2 = saved.headers["location"].rsplit("/", 1)[1]
    page = ann.get(f"/versions/{vid2}").text
    assert 'id="blockers"' in page and 'id="approve"' not in page
    assert ann.post(f"/versions/{vid2}/approve", data={"csrf_token": _token(page)}).status_code == 303
    assert tomllib.loads(world.read_text())["campaign"][0]["template"] == "NEW"
    # roll back to the first version: a draft approved like any other
    first = versions_of_app(app).all()[-1]["id"]
    page = ed.get(f"/versions/{first}").text
    answer = ed.post(f"/versions/{first}/rollback", data={"csrf_token": _token(page), "base": _base_of(page),
                                                          "why": "back to the old offer"})
    assert answer.status_code == 303
    back = answer.headers["location"].rsplit("/", 1)[1]
    page = ann.get(f"/versions/{back}").text
    assert 'id="blockers"' in page            # it carries ann's version 3 (a draft before it)
    page = amy.get(f"/versions/{back}").text
    assert 'id="approve"' in page
    amy.post(f"/versions/{back}/approve", data={"csrf_token": _token(page)})
    assert world.read_text() == versions_of_app(app).get(first)["text"]
    diff = ed.get(f"/diff?a={first}&b={vid}").text
    assert "CRBT_OFFER_1" in diff and "NEW" in diff
    assert {e["action"] for e in app.state.store.audit_entries()} >= {
        "campaign.edit", "version.approve", "version.reload", "version.rollback"}
    assert versions_of_app(app).get(int(vid2))["state"] == "superseded"


def test_the_campaigns_list_links_to_the_edit_pages(app):
    page = user(app, "ed").get("/campaigns").text
    assert 'href="/campaigns/crbt_school/edit"' in page and 'href="/campaigns/new"' in page
    assert 'href="/campaigns/new"' not in user(app, "vera").get("/campaigns").text


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.toml")), ids=lambda p: p.parent.name)
def test_every_examples_tables_survive_an_untouched_form(path):
    """Every campaign and section entry of the operators' programmes, shown in its form and
    submitted unchanged, changes nothing: what the form cannot show faithfully would be
    rewritten by a save that did not mean to."""
    doc = ConfigFile(path.read_text())
    values = doc.values()
    tables = [("campaign", c) for c in values.get("campaign", [])]
    tables += [(name, values[name]) for name in ("engine", "policy", "output") if name in values]
    tables += [(name, entry) for name in ("counters", "markers", "channels") for entry in values.get(name, {}).values()]
    assert tables
    for section, table in tables:
        assert forms.read_form(section, submitted_for(section, table), table) == {}, (section, table)


def test_a_running_service_reloads_an_approved_version_or_refuses_it(versions, world, tmp_path):
    """sigmatch run with a pid file and metrics: an approval's SIGHUP takes (its metrics show
    the new sha256), and one the service refuses (a list file gone since the approval) marks
    the version reload_failed."""
    import socket
    import time
    import urllib.request
    from engine.console.service import reload_outcome
    from engine.console.versions import reload_result

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "spool").mkdir()
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(world), "--out", str(tmp_path / "out"),
                               "--state", str(tmp_path / "state"), "--spool", str(tmp_path / "spool"),
                               "--metrics", f"127.0.0.1:{port}"],
                              cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "sigmatch run never served its metrics"
                time.sleep(0.2)
        pid_file = tmp_path / "sigmatch.pid"
        pid_file.write_text(f"{daemon.pid}\n")
        base = versions.baseline()["id"]
        v, _ = versions.save("ed", "new text", base, "crbt_school", edit_campaign("crbt_school", template="NEW"))
        versions.approve(v["id"], "ann")
        sent_at = time.time()
        assert send_reload(pid_file).state == "unknown"
        result = reload_result(reload_outcome(url, sent_at, v["sha256"], wait_s=60))
        assert result.state == "reloaded", (result, (tmp_path / "daemon.log").read_text()[-2000:])

        v2, _ = versions.save("ed", "newer text", v["id"], "crbt_school", edit_campaign("crbt_school", template="N2"))
        versions.approve(v2["id"], "ann")
        (world.parent / "lists" / "dnd.txt").rename(world.parent / "dnd.txt.away")
        sent_at = time.time()
        send_reload(pid_file)
        result = reload_result(reload_outcome(url, sent_at, v2["sha256"], wait_s=60))
        assert result.state == "rejected", (result, (tmp_path / "daemon.log").read_text()[-2000:])
        versions.record_reload(v2["id"], result)
        assert versions.get(v2["id"])["state"] == "reload_failed"
        assert daemon.poll() is None                     # the service goes on with the previous version
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()


def test_a_campaigns_id_does_not_change_in_its_form(app, world):
    ed = user(app, "ed")
    answer = campaign_form(ed, "crbt_school", id="crbt_school_2", why="rename")
    assert answer.status_code == 400 and 'id="error-id"' in answer.text and "clone" in answer.text
    assert len(versions_of_app(app).all()) == 1


def test_a_post_of_a_few_fields_changes_only_those(app, world):
    """A client that posts some fields (no browser form) leaves the checkboxes and lists alone."""
    ed = user(app, "ed")
    page = ed.get("/campaigns/crbt_school/edit").text
    answer = ed.post("/campaigns/crbt_school/edit", data={"csrf_token": _token(page), "base": _base_of(page),
                                                          "priority": "11", "why": "just the priority"})
    assert answer.status_code == 303, answer.text
    before = tomllib.loads(world.read_text())["campaign"][0]
    after = tomllib.loads(versions_of_app(app).head()["text"])["campaign"][0]
    assert after == {**before, "priority": 11}
    assert 'name="_shown" value="enabled"' in page


def test_section_drafts_are_not_campaigns_on_the_list(app, world):
    ed = user(app, "ed")
    assert post_form(ed, "/configuration/counters/new", "/configuration/counters/new", name="sms", on=["SMS_MO"],
                     why="count texts").status_code == 303
    assert post_form(ed, "/configuration/policy", "/configuration/policy", **{"min_gap": "3d", "blacklist": ["dnd"],
                     "quiet_hours": "22:00-08:00", "max_per_day": "2"}, why="shorter gap").status_code == 303
    assert [v["line"] for v in versions_of_app(app).all()][:2] == ["[policy]", "[counters] sms"]
    page = ed.get("/campaigns").text
    assert "[counters] sms" not in page and "[policy]" not in page


def test_with_metrics_the_reload_is_said_to_wait_for_them_not_to_lack_them(world, tmp_path):
    # the trail said "result unknown (no --metrics to read it from)" of a console given --metrics
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from engine.console.app import create_app
    from engine.console.auth import hash_password
    from engine.console.settings import Settings
    (tmp_path / "data").mkdir()
    program = tmp_path / "sigmatch"
    program.write_text("import signal, time\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\nprint(1, flush=True)\n"
                       "time.sleep(60)\n")
    service = subprocess.Popen([sys.executable, str(program), "run"], stdout=subprocess.PIPE)
    try:
        service.stdout.readline()               # its SIGHUP is ignored from here on
        pid_file = tmp_path / "run.pid"
        pid_file.write_text(f"{service.pid}\n")
        app = create_app(Settings(config=world, data=tmp_path / "data", daemon_pid=pid_file,
                                  metrics="http://127.0.0.1:9/metrics"))
        for name, role in (("ed", "editor"), ("ann", "approver")):
            app.state.store.add_user(name, role, hash_password(PASSWORD))
        ed = TestClient(app, follow_redirects=False)
        ann = TestClient(app, follow_redirects=False)
        for client, name in ((ed, "ed"), (ann, "ann")):
            token = _token(client.get("/login").text)
            client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
        vid = campaign_form(ed, "crbt_school", template="NEW", why="new offer").headers["location"].rsplit("/", 1)[1]
        page = ann.get(f"/versions/{vid}").text
        assert ann.post(f"/versions/{vid}/approve", data={"csrf_token": _token(page)}).status_code == 303
        reload = [e["detail"] for e in app.state.store.audit_entries(action="version.reload")]
        assert reload == ["reload sent, waiting for the service's metrics"]
        assert "no --metrics" not in ann.get(f"/versions/{vid}").text
        app.state.store.close()
    finally:
        service.kill()
        service.wait()


def test_a_number_typed_in_a_why_or_a_note_is_masked_on_every_page(app, world):
    # "why" and an approval's note are free text: a number in them was shown in full
    ed, ann = user(app, "ed"), user(app, "ann")
    saved = campaign_form(ed, "crbt_school", template="NEW", why="asked by 13800138000 at the counter")
    vid = saved.headers["location"].rsplit("/", 1)[1]
    page = ann.get(f"/versions/{vid}").text
    ann.post(f"/versions/{vid}/reject", data={"csrf_token": _token(page), "note": "call 13900139000 first"})
    for path in (f"/versions/{vid}", "/versions", "/simulations", f"/simulations?version={vid}", "/audit"):
        page = ed.get(path).text
        assert "13800138000" not in page and "13900139000" not in page, path
    assert "138****8000" in ed.get(f"/versions/{vid}").text and "139****9000" in ed.get(f"/versions/{vid}").text


def test_a_number_written_in_groups_in_a_why_is_masked_too(app, world):
    # `+86 138-0013-8000` is how the policy view takes a number, and it was shown in full
    ed = user(app, "ed")
    why = "caller +86 138-0013-8000, 139 0013 9000 and 137.0013.7000 asked; live from 2026-12-24"
    saved = campaign_form(ed, "crbt_school", template="NEW", why=why)
    vid = saved.headers["location"].rsplit("/", 1)[1]
    for path in (f"/versions/{vid}", "/versions", "/simulations", "/audit", "/audit.csv"):
        page = ed.get(path).text
        for written in ("138-0013-8000", "139 0013 9000", "137.0013.7000"):
            assert written not in page, (path, written)
    page = ed.get(f"/versions/{vid}").text
    assert "+861******8000" in page and "139****9000" in page and "137****7000" in page and "2026-12-24" in page


def test_a_number_glued_to_a_word_in_a_why_or_a_note_is_masked_too(app, world):
    # helper-123: `id13800138000` and `13800138000_x` were taken for names, as in a log's file
    # names, and shown in full on the pages and in the audit's CSV
    ed, ann = user(app, "ed"), user(app, "ann")
    saved = campaign_form(ed, "crbt_school", template="NEW", why="x13800138000y id13900139000 13700137000_x "
                                                                 "id135-0013-5000 msisdn_134_0013_4000")
    vid = saved.headers["location"].rsplit("/", 1)[1]
    page = ann.get(f"/versions/{vid}").text
    ann.post(f"/versions/{vid}/reject", data={"csrf_token": _token(page), "note": "ask13600136000abc"})
    for path in (f"/versions/{vid}", "/versions", "/simulations", "/audit", "/audit.csv"):
        page = ann.get(path).text
        for number in ("13800138000", "13900139000", "13700137000", "13600136000", "135-0013-5000",
                       "134_0013_4000"):
            assert number not in page, (path, number)
    page = ann.get(f"/versions/{vid}").text
    assert "x138****8000y id139****9000 137****7000_x id135****5000 msisdn_134****4000" in page
    assert "ask136****6000abc" in page


def test_what_check_warns_of_is_shown_with_the_save(app, world):
    """helper-123: a list of which entries were skipped (not MSISDNs) was saved without a word
    on the page; the warning went to the console's log alone."""
    ed = user(app, "ed")
    # a save without warnings says none
    answer = campaign_form(ed, "crbt_school", template="NEW", why="new offer")
    assert 'class="flash warning"' not in ed.get(answer.headers["location"]).text
    mixed = world.parent / "lists" / "mixed.txt"
    mixed.write_text("root:x:0\n13800138000\nabc\n")
    answer = post_form(ed, "/configuration/lists", "/configuration/lists", name="leak", value="lists/mixed.txt",
                       why="a list from the shop")
    assert answer.status_code == 303, answer.text
    page = ed.get(answer.headers["location"]).text
    assert 'class="flash warning"' in page and page.count("2 entries skipped, not an MSISDN") == 1, page[:3000]
    assert "mixed.txt" in page and "root:x:0" not in page


def test_a_live_file_that_is_not_toml_is_mended_by_a_rollback(app, world):
    """helper-123: with the live file edited by hand into text that is not TOML, a rollback to
    a good version was refused as 'the form lacks the version it was made from' (the head's
    parse error was taken for a bad base), and the edit pages did not say the way out."""
    ed = user(app, "ed")
    good = versions_of_app(app).baseline()["id"]
    world.write_text(world.read_text() + "\n[[campaign]\nbroken")
    page = ed.get("/campaigns/new")
    assert page.status_code == 409 and "not TOML" in page.text and "roll back to a version that is" in page.text
    page = ed.get(f"/versions/{good}").text
    answer = ed.post(f"/versions/{good}/rollback", data={"csrf_token": _token(page), "why": "mend the hand edit",
                                                         "base": _base_of(page)})
    assert answer.status_code == 303
    page = ed.get(answer.headers["location"]).text
    assert "the form lacks" not in page and f"holds version {good}&#39;s text" in page, page[:2000]
    assert versions_of_app(app).head()["text"] == versions_of_app(app).get(good)["text"]


def test_a_note_with_control_characters_is_shown_as_escapes(app, world):
    ed, ann = user(app, "ed"), user(app, "ann")
    saved = campaign_form(ed, "crbt_school", template="NEW", why="new template")
    vid = saved.headers["location"].rsplit("/", 1)[1]
    page = ann.get(f"/versions/{vid}").text
    ann.post(f"/versions/{vid}/reject", data={"csrf_token": _token(page), "note": "not\x00yet\r\nnor \u202eso"})
    page = ann.get(f"/versions/{vid}").text
    assert "\x00" not in page and "\u202e" not in page and "not\\x00yet\\r\\nnor \\u202eso" in page
    exported = ann.get("/audit.csv").text
    assert "\x00" not in exported and "not\\x00yet\\r\\nnor \\u202eso" in exported


@pytest.mark.parametrize("why", ["line 1\nline 2", "nul\x00here", "turned \u202eround", "tab\there"])
def test_a_why_with_a_control_character_is_refused(app, world, why):
    # it was kept as typed: a NUL reached the pages' HTML, a line break cut the audit's CSV
    ed = user(app, "ed")
    answer = campaign_form(ed, "crbt_school", template="NEW", why=why)
    assert answer.status_code == 400 and "without control characters" in answer.text
    assert len(versions_of_app(app).all()) == 1


def test_a_move_is_up_or_down_and_nothing_else(app, world):
    # a direction that was neither (or none, from a client posting a few fields) moved it down
    ed = user(app, "ed")
    ed.get("/configuration")
    before = len(versions_of_app(app).all())
    for direction in ("sideways", ""):
        answer = post_form(ed, "/campaigns/crbt_school/move", "/configuration", direction=direction, why="w")
        assert answer.status_code == 303 and answer.headers["location"] == "/configuration"
        assert "the direction is up or down" in ed.get("/configuration").text
    assert len(versions_of_app(app).all()) == before
    answer = post_form(ed, "/campaigns/crbt_school/move", "/configuration", direction="down", why="w")
    assert answer.headers["location"].startswith("/versions/")


def test_a_live_file_that_is_not_utf8_or_gone_is_one_line_on_every_page_never_a_500(app, world):
    from fastapi.testclient import TestClient
    ed = user(app, "ed")
    ed = TestClient(app, follow_redirects=False, raise_server_exceptions=False, cookies=ed.cookies)
    world.write_bytes(world.read_bytes() + b"# caf\xe9\n")
    lines = world.read_bytes().count(b"\n")
    for path in ("/campaigns", "/configuration", "/versions", "/campaigns/crbt_school/edit", "/campaigns/new",
                 "/configuration/policy", "/simulations", "/watch"):
        page = ed.get(path)
        assert page.status_code < 500, (path, page.status_code)
        if page.status_code != 200:
            assert f"line {lines}: not UTF-8 text (byte 6 of the line)" in page.text, path
    world.unlink()
    for path in ("/configuration", "/versions", "/campaigns/crbt_school/edit"):
        page = ed.get(path)
        assert page.status_code == 409 and "cannot read the live configuration" in page.text, path


def test_a_loaders_error_quoting_a_number_is_shown_masked(app, world):
    """A profiles export without its header line: the loader's error quotes the first row as
    the header, a subscriber's number among it. The edit page, the approver's flash (which
    travels in the session cookie) and the audit trail show it masked, as the CLI does."""
    ed, ann = user(app, "ed"), user(app, "ann")
    saved = campaign_form(ed, "crbt_school", template="NEW", why="new offer")
    vid = saved.headers["location"].rsplit("/", 1)[1]
    profiles = world.parent / "profiles.csv"
    profiles.write_text("\n".join(profiles.read_text().splitlines()[1:]) + "\n")    # the header lost
    number = profiles.read_text().split(",", 1)[0]
    assert len(number) == 11
    answer = campaign_form(ed, "crbt_school", template="OTHER", why="another")
    assert answer.status_code == 400 and "no msisdn column" in answer.text
    assert number not in answer.text and f"{number[:3]}****{number[-4:]}" in answer.text
    page = ann.get(f"/versions/{vid}").text
    answer = ann.post(f"/versions/{vid}/approve", data={"csrf_token": _token(page), "note": ""})
    assert answer.status_code == 303
    page = ann.get(answer.headers["location"]).text
    assert "no longer validates" in page and number not in page
    entries = app.state.store.audit_entries(action="version.approve_refused")
    assert entries and all(number not in str(entry) for entry in entries)


def test_a_live_file_hand_edited_into_no_toml_leaves_every_version_page_readable(app, world):
    """From a newcomer trial (issue 14): the live file edited by hand into text that is not
    TOML became a version, and its page, the diff with it, every draft's page (compared
    with the live one) and the page of the version that mended the file answered 500."""
    ed = user(app, "ed")
    saved = campaign_form(ed, "crbt_school", template="NEW", why="new offer")
    draft = saved.headers["location"].rsplit("/", 1)[1]
    good = world.read_text()
    world.write_text(good + "x = = 1\n")
    assert ed.get("/versions").status_code == 200          # a page looks at the file: the edit is recorded
    versions = versions_of_app(app)
    broken = versions.live()["id"]         # the hand edit, recorded as the live version
    assert versions.live()["author"] == "(file)"
    for path in [f"/versions/{broken}", f"/versions/{draft}", f"/diff?a={draft}&b={broken}",
                 f"/diff?a={broken}&b={draft}&all=1"]:
        page = ed.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert "not TOML: Invalid value" in page.text and "x = = 1" in page.text, path
    world.write_text(good)
    assert ed.get("/versions").status_code == 200
    mended = versions.live()["id"]
    assert mended != broken
    page = ed.get(f"/versions/{mended}")
    assert page.status_code == 200 and "not TOML" in page.text


def test_texts_that_are_not_toml_are_compared_line_by_line():
    a = 'x = 1\ny = 2\n'
    assert diff_texts(a, a + "z = = 3\n") == [
        DiffRow("the text", "read as", "TOML", "not TOML: Invalid value (at line 3, column 5)"),
        DiffRow("line 3", "", "", "z = = 3")]
    assert diff_texts("w = [\n" + a, a) == [
        DiffRow("the text", "read as", "not TOML: Invalid value (at line 2, column 1)", "TOML"),
        DiffRow("line 1 (of the first)", "", "w = [", "")]
    assert len(diff_texts(a, a + "z = = 3\n", changed_only=False)) == 4


def test_a_draft_built_before_a_hand_edit_says_to_make_its_change_again(versions, world, store):
    """It said 'roll back to it instead' (it was never live: a rollback would undo the hand
    edit); the hand edit is in the audit trail."""
    base = versions.baseline()["id"]
    v, _ = versions.save("alice", "template", base, "crbt_school", edit_campaign("crbt_school", template="A"))
    world.write_text(world.read_text().replace('max_per_day = 2', 'max_per_day = 3'))
    hand = versions.baseline()
    assert hand["author"] == "(file)" and hand["id"] > v["id"]
    assert versions.approval_blockers(v["id"], "carol") == [
        f"version {v['id']} was built on an older text than the live version {hand['id']} (the live file, edited "
        "by hand), whose changes approving it would undo: make its change again on the live version"]
    entries = [(e["user"], e["action"], e["target"]) for e in store.audit_entries()]
    assert ("(file)", "version.hand_edit", str(hand["id"])) in entries


def test_a_number_too_large_is_said_out_of_range_as_check_says_it(app, world):
    """From a newcomer trial (issue 14): a 40-digit priority was 'expected an integer, got a
    string' (a 39-digit one was out of range, as `sigmatch check` says both)."""
    ed = user(app, "ed")
    for digits in (39, 40, 400):
        answer = campaign_form(ed, "crbt_school", priority="9" * digits, why="first of all")
        assert answer.status_code == 400, answer.text[:300]
        assert f"a {digits}-digit number is out of range" in answer.text, digits


@pytest.mark.parametrize("breakage", ["gone", "a directory", "not UTF-8"])
def test_a_versions_page_says_a_live_file_it_cannot_read_in_one_line_never_a_500(app, world, breakage):
    """helper-132: /versions/N answered 500 (VersionError: cannot read the live configuration)
    where /versions says it in one line, and approve, reject and roll back come back to it:
    the user saw a 500 after a reject that was made."""
    from fastapi.testclient import TestClient
    ed = user(app, "ed")
    saved = campaign_form(ed, "crbt_school", template="NEW", why="new offer")
    vid = saved.headers["location"].rsplit("/", 1)[1]
    ann = TestClient(app, follow_redirects=False, raise_server_exceptions=False, cookies=user(app, "ann").cookies)
    token = _token(ann.get(f"/versions/{vid}").text)
    if breakage == "not UTF-8":
        world.write_bytes(world.read_bytes() + b"# caf\xe9\n")
        line = "not UTF-8 text"
    else:
        world.unlink()
        if breakage == "a directory":
            world.mkdir()
        line = "cannot read the live configuration: " + (
            "Is a directory" if breakage == "a directory" else "No such file or directory")
    page = ann.get(f"/versions/{vid}")
    assert page.status_code == 409 and line in page.text, page.text[-600:]
    assert ann.get("/versions").status_code == 409
    for action, fields in (("approve", {}), ("rollback", {"base": vid, "why": "back"}), ("reject", {"note": "no"})):
        answer = ann.post(f"/versions/{vid}/{action}", data={"csrf_token": token, **fields})
        assert answer.status_code == 303, (action, answer.status_code)
        page = ann.get(answer.headers["location"])
        assert page.status_code == 409 and line in page.text, (action, page.text[-600:])
    # the reject was made, and the page that refuses to show the version says so
    assert f"Version {vid} rejected" in page.text
    assert versions_of_app(app).get(int(vid))["state"] == "rejected"


def test_a_base_that_is_no_version_is_refused_not_taken_for_a_form_newer_than_every_save(app, world):
    """helper-132: a forged `base` past every version (base=1000000) counted no save as made
    after it: the second editor overwrote the first without a conflict."""
    ed, eve = user(app, "ed"), user(app, "eve")
    page_eve = eve.get("/campaigns/crbt_school/edit").text
    assert campaign_form(ed, "crbt_school", template="ED", why="ed's text").status_code == 303
    doc = ConfigFile(world.read_text())
    data = submitted_for("campaign", doc.campaign("crbt_school"), template="EVE")
    for base in ("1000000", "0", "-3", "9" * 30):
        data.update(csrf_token=_token(page_eve), base=base, why="eve's text")
        answer = eve.post("/campaigns/crbt_school/edit", data=data)
        # with separators, which a flash's mask of 7-digit runs leaves readable (helper-136)
        assert answer.status_code == 400 and f"base: no version {int(base):,}" in answer.text, (base, answer.status_code)
    # a one-click change as well
    answer = post_form(eve, "/campaigns/crbt_school/pause", "/configuration", base="500", why="pause it")
    assert answer.status_code == 303 and answer.headers["location"] == "/configuration"
    assert "base: no version 500" in eve.get("/configuration").text
    # the form's own base, stale: the conflict it always was
    data.update(base=_base_of(page_eve))
    answer = eve.post("/campaigns/crbt_school/edit", data=data)
    assert answer.status_code == 409 and "ed saved version" in answer.text
    assert [tomllib.loads(v["text"])["campaign"][0].get("template") for v in versions_of_app(app).all()] == \
        ["ED", "CRBT_OFFER_1"]


@pytest.mark.parametrize("character", ["\u202e", "\u202a", "\u2066", "\u2069", "\x85", "\x9b", "\u200e", "\u200f",
                                       "\u061c", "\xad", "\u200b", "\u2060", "\ufeff", "\u180e"])
def test_a_one_line_value_with_a_bidirectional_override_or_a_c1_control_is_refused_as_a_why_is(app, world,
                                                                                                  character):
    """helper-132: template="\\u202eABC" and [engine] encoding="utf-8\\u202e" were saved, where
    a "why" with the same character is refused."""
    ed = user(app, "ed")
    answer = campaign_form(ed, "crbt_school", template=f"{character}ABC", why="new template")
    assert answer.status_code == 400 and 'id="error-template"' in answer.text
    # named, as most of these show nothing (helper-137)
    assert f"must be one line without control characters (U+{ord(character):04X} at character 1)" in answer.text
    answer = post_form(ed, "/configuration/engine", "/configuration/engine", encoding=f"utf-8{character}",
                       why="another encoding")
    assert answer.status_code == 400 and 'id="error-encoding"' in answer.text
    assert "must be one line without control characters" in answer.text
    answer = post_form(ed, "/configuration/lists", "/configuration/lists", name="vip",
                       value=f"lists/dnd.txt{character}", why="vip list")
    assert answer.status_code == 400 and 'id="error-value"' in answer.text
    assert "must be one line without control characters" in answer.text
    assert len(versions_of_app(app).all()) == 1


def test_a_note_longer_than_a_why_may_be_is_refused_not_cut(app, world):
    """helper-132: approval and rejection notes were cut to 2,000 characters without a word,
    where a longer "why" is refused."""
    ed, ann = user(app, "ed"), user(app, "ann")
    saved = campaign_form(ed, "crbt_school", template="NEW", why="new offer")
    vid = saved.headers["location"].rsplit("/", 1)[1]
    before = world.read_bytes()
    for action in ("approve", "reject"):
        page = ann.get(f"/versions/{vid}").text
        answer = ann.post(f"/versions/{vid}/{action}", data={"csrf_token": _token(page), "note": "n" * 2_001})
        assert answer.status_code == 303
        page = ann.get(answer.headers["location"]).text
        assert "note&#34; is longer than 2,000 characters" in page, (action, page[-800:])
    assert versions_of_app(app).get(int(vid))["state"] == "draft" and versions_of_app(app).approvals(int(vid)) == []
    assert world.read_bytes() == before
    # 2,000 is taken whole
    page = ann.get(f"/versions/{vid}").text
    ann.post(f"/versions/{vid}/reject", data={"csrf_token": _token(page), "note": "n" * 2_000})
    assert [a["note"] for a in versions_of_app(app).approvals(int(vid))] == ["n" * 2_000]


def test_a_live_list_file_moved_away_is_said_on_the_campaigns_page(app, world):
    """helper-132: a list added and approved, then its file moved away: approval of the same
    text said `lists.sec: ...: no such list file`, the campaigns page said nothing."""
    ed, ann = user(app, "ed"), user(app, "ann")
    secret = world.parent / "secret.txt"
    secret.write_text("13800010001\n")
    answer = post_form(ed, "/configuration/lists", "/configuration/lists", name="sec", value="secret.txt",
                       why="a secret list")
    assert answer.status_code == 303, answer.text
    vid = answer.headers["location"].rsplit("/", 1)[1]
    page = ann.get(f"/versions/{vid}").text
    assert ann.post(f"/versions/{vid}/approve", data={"csrf_token": _token(page)}).status_code == 303
    assert 'id="config-problem"' not in ann.get("/campaigns").text
    secret.rename(world.parent / "moved.txt")
    page = ann.get("/campaigns")
    assert page.status_code == 200 and 'id="config-problem"' in page.text
    problem = page.text.split('id="config-problem">', 1)[1].split("</p>", 1)[0]
    assert f"{world}: lists.sec: {secret}: no such list file" in problem
    assert 'id="campaign-crbt_school"' in page.text          # the campaigns are still listed
    # approval of that text says it in the same words
    saved = campaign_form(ed, "crbt_school", template="NEW", why="new offer")
    assert saved.status_code == 400 and f"lists.sec: {secret}: no such list file" in saved.text
