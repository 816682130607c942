"""The configuration file of SPEC §2: what parses to what, and how every mistake is reported."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.language.config import (
    ALL_DAYS, EVENT_TYPES, CampaignSpec, Config, CounterSpec, OutputSpec, PolicySpec,
    load_config, parse_config, parse_days, parse_duration, parse_hours, parse_utc_offset,
)
from engine.errors import ConfigError

SPEC_EXAMPLE = '''
[engine]
utc_offset  = "+08:00"         # local time for hours, days, quiet hours and daily caps
profiles    = "data/profiles.parquet"
max_pending = 10_000_000       # bound on delayed actions waiting; overflow is counted

[lists]                        # name = file
dnd          = "lists/dnd.txt"
crbt_targets = "lists/crbt_targets.roar"
crbt_peers   = "lists/crbt_peers.roar"

[areas]                        # name = file
schools = "areas/school_cells.txt"
airport = "areas/airport_cells.txt"

[policy]                       # contact policy, applied to every campaign
blacklist   = ["dnd"]          # never contacted
quiet_hours = "22:00-08:00"    # actions due inside are dropped (counted)
min_gap     = "7d"             # between any two contacts of one subscriber
max_per_day = 2                # contacts per subscriber per local day

[counters]                     # per-subscriber usage counters
sms      = { on = ["SMS_MO"] }
ld_calls = { on = ["CALL_MO_END"], flags = ["long_distance"] }
roam_min = { on = ["CALL_MO_END", "CALL_MT_END"], flags = ["roaming"], add = "dur_minutes", window = "90d" }

[[campaign]]
id        = "crbt_school"
priority  = 10                 # higher wins when several match
on        = ["CALL_MO_END"]    # trigger event types
audience  = "crbt_targets"     # white list of the subscriber; absent = everyone
peer_in   = "crbt_peers"       # the event's peer must be in this list
exclude   = []                 # campaign black lists
where     = "arpu >= 50 and brand != 'prepaid' and 'student' in tags"
area      = "schools"          # the event's cell must be in this area
enter     = false              # true: only when the subscriber moves INTO the area
hours     = "09:00-18:00"
days      = "mon-fri"
counter   = { name = "sms", at_least = 10 }
delay     = "5m"               # act this long after the trigger ...
recheck   = ["area", "powered_on"]   # ... if these still hold then
cooldown  = "30d"              # no contact of this campaign within
once      = false              # true: at most one contact per subscriber, ever
exempt    = []                 # policy rules this campaign ignores: "min_gap", "max_per_day", "quiet_hours" (service notices such as a rebate)
channel   = "sms"              # sms | boss | outbound | popup | any name
template  = "CRBT_OFFER_1"
holdout   = 0.05               # fraction kept as control group
convert_on     = ["ORDER"]     # what counts as a response ...
convert_arg    = 3001          # ... optionally only this offer code
convert_within = "7d"
stop_after     = 3             # contacts without a response before we give up
'''

DAY = 86_400_000


def write(tmp_path: Path, text: str, name: str = "campaigns.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_spec_example(tmp_path):
    path = write(tmp_path, SPEC_EXAMPLE)
    config = load_config(path)
    assert config == Config(
        path=path,
        utc_offset_ms=8 * 3_600_000,
        profiles=tmp_path / "data" / "profiles.parquet",
        max_pending=10_000_000,
        lists={"dnd": tmp_path / "lists" / "dnd.txt",
               "crbt_targets": tmp_path / "lists" / "crbt_targets.roar",
               "crbt_peers": tmp_path / "lists" / "crbt_peers.roar"},
        areas={"schools": tmp_path / "areas" / "school_cells.txt",
               "airport": tmp_path / "areas" / "airport_cells.txt"},
        policy=PolicySpec(blacklist=("dnd",), quiet_hours=(22 * 60, 8 * 60), min_gap_ms=7 * DAY,
                          max_per_day=2),
        counters=(
            CounterSpec("sms", on=(3,), flags=0, add="count", window_ms=None),
            CounterSpec("ld_calls", on=(1,), flags=1, add="count", window_ms=None),
            CounterSpec("roam_min", on=(1, 2), flags=2, add="dur_minutes", window_ms=90 * DAY),
        ),
        campaigns=(CampaignSpec(
            id="crbt_school", on=(1,), channel="sms", priority=10, audience="crbt_targets",
            peer_in="crbt_peers", exclude=(),
            where="arpu >= 50 and brand != 'prepaid' and 'student' in tags",
            area="schools", enter=False, hours=(9 * 60, 18 * 60), days=0b0011111,
            counter="sms", at_least=10, delay_ms=5 * 60_000,
            recheck=frozenset({"area", "powered_on"}), cooldown_ms=30 * DAY, once=False,
            exempt=frozenset(), template="CRBT_OFFER_1", holdout=0.05, convert_on=(11,),
            convert_arg=3001, convert_within_ms=7 * DAY, stop_after=3,
        ),),
        event_types=dict(EVENT_TYPES),
        output=OutputSpec(),
    )
    assert config.campaigns[0].holdout_threshold == 500
    assert all(p.is_absolute() for p in [config.profiles, *config.lists.values(), *config.areas.values()])


def test_load_config_with_a_relative_path_anchors_files_at_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", SPEC_EXAMPLE)
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/campaigns.toml")
    assert config.path == tmp_path / "conf" / "campaigns.toml"
    assert config.lists["dnd"] == tmp_path / "conf" / "lists" / "dnd.txt"
    assert config.profiles == tmp_path / "conf" / "data" / "profiles.parquet"


def test_absolute_and_dotted_paths(tmp_path):
    config = parse_config(f'[lists]\na = "{tmp_path}/x/a.txt"\nb = "../lists/./b.txt"\n',
                          tmp_path / "etc" / "c.toml")
    assert config.lists == {"a": tmp_path / "x" / "a.txt", "b": tmp_path / "lists" / "b.txt"}


def test_defaults_of_an_empty_configuration(tmp_path):
    config = parse_config("", tmp_path / "c.toml")
    assert config.utc_offset_ms == 0
    assert config.profiles is None
    assert config.max_pending == 10_000_000
    assert config.lists == {} and config.areas == {}
    assert config.policy == PolicySpec(blacklist=(), quiet_hours=None, min_gap_ms=0, max_per_day=None)
    assert config.counters == () and config.campaigns == ()
    assert config.event_types == EVENT_TYPES
    assert config.output == OutputSpec(format="csv", max_records=100_000, max_age_ms=3_600_000)


def test_defaults_of_a_minimal_campaign(tmp_path):
    config = parse_config('[[campaign]]\nid = "c"\non = ["SMS_MO"]\nchannel = "sms"\n', tmp_path / "c.toml")
    assert config.campaigns == (CampaignSpec(id="c", on=(3,), channel="sms"),)
    c = config.campaigns[0]
    assert (c.priority, c.template, c.holdout, c.delay_ms, c.days, c.hours) == (0, "", 0.0, 0, ALL_DAYS, None)
    assert (c.audience, c.peer_in, c.exclude, c.where, c.area, c.counter) == (None, None, (), None, None, None)
    assert (c.cooldown_ms, c.once, c.enter, c.recheck, c.exempt) == (0, False, False, frozenset(), frozenset())
    assert (c.convert_on, c.convert_arg, c.convert_within_ms, c.stop_after) == ((), None, None, None)


def test_campaigns_sort_by_priority_then_id_and_counters_keep_file_order(tmp_path):
    campaigns = [("b", 5), ("a", 5), ("z", 10), ("m", 0), ("low", -3), ("c", 5)]
    text = '[counters]\nzz = { on = ["SMS_MO"] }\naa = { on = ["SMS_MT"] }\nmm = { on = ["ORDER"] }\n'
    for cid, priority in campaigns:
        text += f'[[campaign]]\nid = "{cid}"\npriority = {priority}\non = ["SMS_MO"]\nchannel = "sms"\n'
    config = parse_config(text, tmp_path / "c.toml")
    assert [c.id for c in config.campaigns] == ["z", "a", "b", "c", "m", "low"]
    assert [c.name for c in config.counters] == ["zz", "aa", "mm"]


def test_event_types_are_builtin_plus_custom(tmp_path):
    config = parse_config('''
[counters]
topups = { on = ["TOP_UP", "RECHARGE"] }
[[campaign]]
id = "c"
on = ["APP_OPEN"]
convert_on = ["TOP_UP"]
channel = "popup"
[event_types]
TOP_UP = 32
APP_OPEN = 63
''', tmp_path / "c.toml")
    assert config.event_types == {**EVENT_TYPES, "TOP_UP": 32, "APP_OPEN": 63}
    assert config.counters[0].on == (32, 12)
    assert config.campaigns[0].on == (63,)
    assert config.campaigns[0].convert_on == (32,)


def test_repeated_event_types_collapse(tmp_path):
    config = parse_config('[[campaign]]\nid = "c"\non = ["SMS_MO", "SMS_MT", "SMS_MO"]\nchannel = "x"\n',
                          tmp_path / "c.toml")
    assert config.campaigns[0].on == (3, 4)


def test_counter_add_forms(tmp_path):
    text = "[counters]\n" + "\n".join([
        'a = { on = ["SMS_MO"] }', 'b = { on = ["SMS_MO"], add = 1 }', 'c = { on = ["SMS_MO"], add = "dur" }',
        'd = { on = ["SMS_MO"], add = "dur_minutes" }', 'e = { on = ["SMS_MO"], add = "count" }',
        'f = { on = ["SMS_MO"], flags = ["long_distance", "roaming", "international"] }',
        '[counters.g]\non = ["DATA_SESSION"]\nwindow = "60d"'])
    counters = parse_config(text, tmp_path / "c.toml").counters
    assert [c.add for c in counters] == ["count", "count", "dur", "dur_minutes", "count", "count", "count"]
    assert counters[5].flags == 7
    assert counters[6].window_ms == 60 * DAY and counters[0].window_ms is None


def test_output_section(tmp_path):
    def output(body: str) -> OutputSpec:
        return parse_config("[output]\n" + body, tmp_path / "c.toml").output
    assert output('format = "parquet"\nmax_records = 5\nmax_age = "10m"') == OutputSpec("parquet", 5, 600_000)
    assert output('format = "jsonl"') == OutputSpec("jsonl", 100_000, 3_600_000)
    assert output('max_age = "0"').max_age_ms is None
    assert output('max_age = "0s"').max_age_ms is None
    assert output('max_age = "2h"').max_age_ms == 7_200_000


def test_exempt_recheck_and_other_campaign_keys(tmp_path):
    config = parse_config('''
[lists]
vip = "vip.txt"
[areas]
airport = "airport.txt"
[[campaign]]
id = "rebate.v2-final"
on = ["ORDER"]
channel = "boss"
exempt = ["min_gap", "max_per_day", "quiet_hours"]
audience = "vip"
area = "airport"
enter = true
delay = "20m"
recheck = ["area", "powered_on", "audience", "hours"]
days = "sat,sun"
once = true
holdout = 1
convert_on = ["RECHARGE"]
convert_within = "60d"
''', tmp_path / "c.toml")
    c = config.campaigns[0]
    assert c.exempt == {"min_gap", "max_per_day", "quiet_hours"}
    assert c.recheck == {"area", "powered_on", "audience", "hours"}
    assert (c.enter, c.once, c.days, c.holdout, c.holdout_threshold) == (True, True, 0b1100000, 1.0, 10_000)
    assert c.convert_arg is None and c.convert_within_ms == 60 * DAY


@pytest.mark.parametrize("text, ms", [
    ("0s", 0), ("1s", 1_000), ("5m", 300_000), ("2h", 7_200_000), ("7d", 7 * DAY), ("007m", 420_000),
    ("36500d", 36_500 * DAY), ("876000h", 876_000 * 3_600_000),
])
def test_durations(text, ms):
    parsed = parse_duration(text)
    assert parsed == ms


@pytest.mark.parametrize("text", [
    "5", "0", "-5m", "5.5m", "5 m", " 5m", "5M", "5x", "m", "", "5ms", "1w", "5mm", "+5m",
    "36501d", "999999999999999999999d", "٥m", 5, 5.0, True, None,
])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text, hours", [
    ("09:00-18:00", (540, 1080)), ("22:00-08:00", (1320, 480)), ("00:00-23:59", (0, 1439)),
    ("23:59-00:00", (1439, 0)), ("9:30-17:05", (570, 1025)), ("08:00 - 09:00", (480, 540)),
])
def test_hours(text, hours):
    assert parse_hours(text) == hours


@pytest.mark.parametrize("text", [
    "09:00-09:00", "24:00-08:00", "08:00-24:00", "08:60-09:00", "0800-0900", "08:00", "08:00-",
    "8-9", "08:00-09:00-10:00", "", "8:0-9:00", "-1:00-08:00", 900, None,
])
def test_bad_hours(text):
    with pytest.raises(ValueError):
        parse_hours(text)


@pytest.mark.parametrize("text, days", [
    ("mon", ["mon"]), ("mon-fri", ["mon", "tue", "wed", "thu", "fri"]), ("sat,sun", ["sat", "sun"]),
    ("mon,wed-fri", ["mon", "wed", "thu", "fri"]), ("fri-mon", ["fri", "sat", "sun", "mon"]),
    ("sun-tue", ["sun", "mon", "tue"]), ("mon-sun", ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
    ("sat-fri", ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), ("wed-wed", ["wed"]),
    ("Mon, Sat - Sun", ["mon", "sat", "sun"]), ("mon,mon", ["mon"]),
])
def test_days(text, days):
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    assert parse_days(text) == sum(1 << names.index(d) for d in days)


@pytest.mark.parametrize("text", ["", "  ", "monday", "mon-", "-fri", "mon--fri", "mon-wed-fri",
                                  "mon,,fri", "mon,", "xyz", "1-5", 3, None])
def test_bad_days(text):
    with pytest.raises(ValueError):
        parse_days(text)


@pytest.mark.parametrize("text, ms", [
    ("+00:00", 0), ("+08:00", 28_800_000), ("-05:30", -19_800_000), ("+05:45", 20_700_000),
    ("+14:00", 50_400_000), ("-12:00", -43_200_000),
])
def test_utc_offsets(text, ms):
    assert parse_utc_offset(text) == ms


@pytest.mark.parametrize("text", ["08:00", "+8:00", "+0800", "+08", "Z", "UTC+8", "+14:30", "+08:60",
                                  "-15:00", "", 8])
def test_bad_utc_offsets(text):
    with pytest.raises(ValueError):
        parse_utc_offset(text)


@pytest.mark.parametrize("holdout, threshold", [
    (0, 0), (0.0, 0), (1, 10_000), (0.05, 500), (0.0001, 1), (0.0003, 3), (0.1234, 1234), (0.9999, 9999),
    (0.07, 700), (0.3, 3000),
])
def test_holdout_multiples_of_a_ten_thousandth(tmp_path, holdout, threshold):
    config = parse_config(f'[[campaign]]\nid = "c"\non = ["SMS_MO"]\nchannel = "sms"\nholdout = {holdout}\n',
                          tmp_path / "c.toml")
    assert config.campaigns[0].holdout_threshold == threshold


# --------------------------------------------------------------------------- errors

BASE = '''
[lists]
dnd = "dnd.txt"
vip = "vip.txt"
[areas]
airport = "airport.txt"
[counters]
sms = { on = ["SMS_MO"] }
[markers]
sent = { on = ["SMS_MO"] }
'''
CAMPAIGN = {"id": '"c1"', "on": '["SMS_MO"]', "channel": '"sms"'}
C1 = 'campaign[0] (id "c1")'


def campaign_text(**keys) -> str:
    fields = {**CAMPAIGN, **keys}
    return "[[campaign]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None)


VARIANTS = '[{ template = "A", weight = 1 }, { template = "B", weight = 1 }]'
CAMPAIGN_ERRORS = [
    # (campaign keys, key named in the message, fragment of the message)
    (dict(delay='"5x"'), f"{C1}.delay", '"5x" is not a duration like "5m"'),
    (dict(delay='"5"'), f"{C1}.delay", "is not a duration"),
    (dict(delay='"-5m"'), f"{C1}.delay", "is not a duration"),
    (dict(delay='"1.5h"'), f"{C1}.delay", "is not a duration"),
    (dict(delay="300"), f"{C1}.delay", "is not a duration"),
    (dict(delay='"40000d"'), f"{C1}.delay", "longer than 100 years"),
    (dict(cooldown='"30 d"'), f"{C1}.cooldown", "is not a duration"),
    (dict(convert_on='["ORDER"]', convert_within='"0d"'), f"{C1}.convert_within", "longer than zero"),
    (dict(convert_on='["ORDER"]', convert_within="7"), f"{C1}.convert_within", "is not a duration"),
    (dict(hours='"09:00-09:00"'), f"{C1}.hours", "starts where it ends"),
    (dict(hours='"24:00-08:00"'), f"{C1}.hours", "is not a time of day"),
    (dict(hours='"9-18"'), f"{C1}.hours", 'is not hours like "09:00-18:00"'),
    (dict(hours="09:00:00"), f"{C1}.hours", "is not hours"),
    (dict(days='"mon-fry"'), f"{C1}.days", '"mon-fry" is not a day'),
    (dict(days='["mon"]'), f"{C1}.days", "is not days"),
    (dict(id=None), "campaign[0].id", "missing"),
    (dict(id='""'), "campaign[0].id", "must not be empty"),
    (dict(id="7"), "campaign[0].id", "expected a string, got an integer (7)"),
    (dict(id='"crbt school"'), "campaign[0].id", "not a valid campaign id"),
    (dict(id='"a/b"'), "campaign[0].id", "not a valid campaign id"),
    # dots alone would be the console's address's own dot segments (/campaigns/../edit)
    (dict(id='".."'), "campaign[0].id", "not a valid campaign id (letters, digits, _ . -, not dots alone)"),
    (dict(id='"."'), "campaign[0].id", "not a valid campaign id"),
    (dict(on=None), f"{C1}.on", "missing"),
    (dict(on="[]"), f"{C1}.on", "at least one event type"),
    (dict(on='"SMS_MO"'), f"{C1}.on", "expected an array of strings, got a string"),
    (dict(on='["SMS_MO", "SMS_M0"]'), f"{C1}.on[1]", 'unknown event type "SMS_M0"; did you mean'),
    (dict(on="[3]"), f"{C1}.on[0]", "expected a string, got an integer"),
    (dict(on='["sms_mo"]'), f"{C1}.on[0]", "unknown event type"),
    (dict(channel=None), f"{C1}.channel", "missing"),
    (dict(channel='""'), f"{C1}.channel", "must not be empty"),
    (dict(channel='"sms/out"'), f"{C1}.channel", "not a channel name"),
    (dict(channel='".."'), f"{C1}.channel", "not a channel name"),
    (dict(channel='"conversions"'), f"{C1}.channel", "reserved"),
    (dict(channel='"dead_letters"'), f"{C1}.channel", "reserved"),
    (dict(channel='"Conversions"'), f"{C1}.channel", "reserved"),
    (dict(channel="1"), f"{C1}.channel", "expected a string"),
    (dict(priority='"high"'), f"{C1}.priority", 'expected an integer, got a string ("high")'),
    (dict(priority="true"), f"{C1}.priority", "expected an integer, got a boolean (true)"),
    (dict(priority="1.5"), f"{C1}.priority", "expected an integer, got a float"),
    (dict(priority="3_000_000_000"), f"{C1}.priority", "out of range"),
    (dict(audience='"vips"'), f"{C1}.audience", 'unknown list "vips"; did you mean "vip"?'),
    (dict(audience='["vip"]'), f"{C1}.audience", "expected a string, got an array"),
    (dict(peer_in='"airport"'), f"{C1}.peer_in", 'unknown list "airport"'),
    (dict(exclude='["dnd", "nope"]'), f"{C1}.exclude[1]", 'unknown list "nope"'),
    (dict(exclude='"dnd"'), f"{C1}.exclude", "expected an array of strings"),
    (dict(area='"school"'), f"{C1}.area", 'unknown area "school" (not in [areas])'),
    (dict(area='"airprot"'), f"{C1}.area", 'unknown area "airprot"; did you mean "airport"?'),
    (dict(area='"vip"'), f"{C1}.area", 'unknown area "vip"'),
    (dict(enter="1"), f"{C1}.enter", "expected true or false, got an integer"),
    (dict(enter='"yes"'), f"{C1}.enter", "expected true or false"),
    (dict(enter="true"), f"{C1}.enter", "needs an area"),
    (dict(once="0"), f"{C1}.once", "expected true or false"),
    (dict(counter='"sms"'), f"{C1}.counter", "expected a table"),
    (dict(counter='{ name = "sms" }'), f"{C1}.counter.at_least", "missing"),
    (dict(counter="{ at_least = 3 }"), f"{C1}.counter.name", "missing"),
    (dict(counter='{ name = "calls", at_least = 3 }'), f"{C1}.counter.name", 'unknown counter "calls"'),
    (dict(counter='{ name = "smss", at_least = 3 }'), f"{C1}.counter.name", 'unknown counter "smss"; did you mean "sms"?'),
    (dict(counter='{ name = "sms", at_least = -1 }'), f"{C1}.counter.at_least", "out of range"),
    (dict(counter='{ name = "sms", at_least = "3" }'), f"{C1}.counter.at_least", "expected an integer"),
    (dict(counter='{ name = "sms", at_least = 3, window = "1d" }'), f"{C1}.counter.window", "unknown key"),
    (dict(recheck='["area"]'), f"{C1}.recheck", '"area" needs an area'),
    (dict(recheck='["audience"]'), f"{C1}.recheck", '"audience" needs an audience'),
    (dict(recheck='["powered_off"]'), f"{C1}.recheck[0]", 'unknown rule "powered_off"'),
    (dict(recheck='"area"'), f"{C1}.recheck", "expected an array"),
    (dict(exempt='["blacklist"]'), f"{C1}.exempt[0]", 'unknown rule "blacklist"'),
    (dict(exempt='["cooldown"]'), f"{C1}.exempt[0]", "unknown rule"),
    (dict(holdout="0.00005"), f"{C1}.holdout", "not a multiple of 0.0001"),
    (dict(holdout="0.12345"), f"{C1}.holdout", "not a multiple of 0.0001"),
    (dict(holdout="1.5"), f"{C1}.holdout", "not between 0 and 1"),
    (dict(holdout="-0.1"), f"{C1}.holdout", "not between 0 and 1"),
    (dict(holdout='"5%"'), f"{C1}.holdout", "expected a number between 0 and 1"),
    (dict(holdout="true"), f"{C1}.holdout", "expected a number"),
    (dict(holdout="nan"), f"{C1}.holdout", "not between 0 and 1"),
    (dict(convert_on='["ORDERS"]'), f"{C1}.convert_on[0]", "unknown event type"),
    (dict(convert_arg="3001"), f"{C1}.convert_arg", "needs convert_on"),
    (dict(convert_within='"7d"'), f"{C1}.convert_within", "needs convert_on"),
    (dict(convert_on='["ORDER"]', convert_arg="-1"), f"{C1}.convert_arg", "out of range"),
    (dict(convert_on='["ORDER"]', convert_arg='"3001"'), f"{C1}.convert_arg", "expected an integer"),
    (dict(stop_after="0"), f"{C1}.stop_after", "out of range"),
    (dict(stop_after="2.0"), f"{C1}.stop_after", "expected an integer"),
    (dict(template="5"), f"{C1}.template", "expected a string"),
    # written raw into every action file, where a NUL ends the row for many readers (helper-124)
    (dict(template='"a\\u0000b"'), f"{C1}.template", "holds a control character (U+0000)"),
    (dict(template='"a\\u007fb"'), f"{C1}.template", "holds a control character (U+007F)"),
    (dict(variants='[{ template = "a\\u001bb", weight = 1 }]'), f"{C1}.variants[0].template", "(U+001B)"),
    (dict(where="5"), f"{C1}.where", "expected a string"),
    (dict(where='""'), f"{C1}.where", "must not be empty"),
    (dict(where='"arpu >= 50 and"'), f"{C1}.where", 'expected a number, string, attribute or'),
    (dict(where='"arpu >= 50 and brand = \'x\'"'), f"{C1}.where", "at column 22"),
    (dict(where='"arpu"'), f"{C1}.where", "where must be a condition"),
    (dict(where='"__import__(\'os\')"'), f"{C1}.where", "function calls are not allowed"),
    (dict(where='"os.system(\'ls\') == 0"'), f"{C1}.where", "unexpected character '.' at column 3"),
    (dict(flags='["roam"]'), f"{C1}.flags[0]", 'unknown flag "roam"; did you mean "roaming"?'),
    (dict(flags='["x"]'), f"{C1}.flags[0]", "known: long_distance, roaming, international"),
    (dict(flags='"roaming"'), f"{C1}.flags", "expected an array of strings"),
    (dict(arg="-1"), f"{C1}.arg", "out of range"),
    (dict(arg='"3001"'), f"{C1}.arg", "expected an integer, got a string"),
    (dict(enabled='"no"'), f"{C1}.enabled", "expected true or false"),
    (dict(enabled="0"), f"{C1}.enabled", "expected true or false, got an integer"),
    (dict(start='"2027-2-5"'), f"{C1}.start", 'is not a date like "2027-02-05"'),
    (dict(start='"2027-02-30"'), f"{C1}.start", "is not a day of the calendar"),
    (dict(end="20270212"), f"{C1}.end", "is not a date"),
    (dict(end="2027-02-12T10:00:00"), f"{C1}.end", "is not a date"),
    (dict(start='"2027-02-05"', end='"2027-02-04"'), f"{C1}.end", "2027-02-04 is before start 2027-02-05"),
    (dict(id='"global"'), "campaign[0].id", '"global" is reserved'),
    (dict(when="5"), f"{C1}.when", "expected a string"),
    (dict(when='""'), f"{C1}.when", "must not be empty"),
    (dict(when='"smss >= 3"'), f"{C1}.when", "unknown counter 'smss' (not in [counters]); did you mean 'sms'? at column 1"),
    (dict(when='"sms * sms > 3"'), f"{C1}.when", "a product of two counters (one side of '*' must be a number) at column 5"),
    (dict(when='"1 < sms < 3"'), f"{C1}.when", "comparisons cannot be chained; use 'and' at column 9"),
    (dict(when='"sms > 4294967296"'), f"{C1}.when", "the constant of this side is 4,294,967,296; it must be below 2^32"),
    (dict(when='"sms * 4294967296 >= 0"'), f"{C1}.when", "the coefficient of 'sms' on this side is 4,294,967,296"),
    (dict(when='"' + " + ".join(["sms"] * 3) + ' > 0 or sms > 1 and"'), f"{C1}.when", "expected a number, a counter or '('"),
    (dict(when='"sms"'), f"{C1}.when", "when must be a condition"),
    (dict(when='"sms >= \\"3\\""'), f"{C1}.when", "when has no strings"),
    (dict(anniversary="5"), f"{C1}.anniversary", "expected a string"),
    (dict(anniversary='""'), f"{C1}.anniversary", "must not be empty"),
    (dict(anniversary='"tags"'), f"{C1}.anniversary", "not a date attribute"),
    (dict(after='{ marker = "snet", within = "1h" }'), f"{C1}.after.marker", 'unknown marker "snet"; did you mean "sent"?'),
    (dict(after='{ marker = "sent" }'), f"{C1}.after.within", "missing (each entry needs marker and within)"),
    (dict(after='{ within = "1h" }'), f"{C1}.after.marker", "missing"),
    (dict(after='{ marker = "sent", within = "0s" }'), f"{C1}.after.within", "must be longer than zero"),
    (dict(after='{ marker = "sent", within = 60 }'), f"{C1}.after.within", "is not a duration"),
    (dict(after='{ marker = "sent", within = "1h", at = 1 }'), f"{C1}.after.at", "unknown key"),
    (dict(after='"sent"'), f"{C1}.after", "expected a table { marker, within } or an array of them"),
    (dict(not_after='[{ marker = "sent", within = "1h" }, { marker = "zz", within = "1h" }]'),
     f"{C1}.not_after[1].marker", 'unknown marker "zz" (not in [markers])'),
    (dict(not_after="[1]"), f"{C1}.not_after[0]", "expected a table, got an integer"),
    (dict(absent='["sent"]'), f"{C1}.absent", "needs a non-zero delay"),
    (dict(absent='["sent"]', delay='"0s"'), f"{C1}.absent", "needs a non-zero delay"),
    (dict(absent='["snt"]', delay='"1h"'), f"{C1}.absent[0]", 'unknown marker "snt"; did you mean "sent"?'),
    (dict(absent='"sent"', delay='"1h"'), f"{C1}.absent", "expected an array of strings"),
    (dict(recheck='["absent"]', delay='"1h"'), f"{C1}.recheck[0]", 'unknown rule "absent"'),
    (dict(delya='"5m"'), f"{C1}.delya", "unknown key (did you mean 'delay'?)"),
    (dict(daily_budget="0"), f"{C1}.daily_budget", "out of range (1 to"),
    (dict(daily_budget="-3"), f"{C1}.daily_budget", "out of range"),
    (dict(daily_budget="2.5"), f"{C1}.daily_budget", "expected an integer, got a float"),
    (dict(daily_budget='"100"'), f"{C1}.daily_budget", "expected an integer, got a string"),
    (dict(total_budget="0"), f"{C1}.total_budget", "out of range (1 to"),
    (dict(total_budget="true"), f"{C1}.total_budget", "expected an integer, got a boolean"),
    (dict(daily_budjet="5"), f"{C1}.daily_budjet", "did you mean 'daily_budget'?"),
    (dict(colour='"red"'), f"{C1}.colour", "unknown key"),
    (dict(template='"T"', variants=VARIANTS), f"{C1}.variants", "replaces template: give one of them, not both"),
    (dict(template='""', variants=VARIANTS), f"{C1}.variants", "replaces template"),
    (dict(variants="[]"), f"{C1}.variants", "0 variants: give 1 to 16"),
    (dict(variants="[" + ", ".join(f'{{ template = "T{i}", weight = 1 }}' for i in range(17)) + "]"),
     f"{C1}.variants", "17 variants: give 1 to 16"),
    (dict(variants='"A"'), f"{C1}.variants", "expected an array of tables { template, weight }, got a string"),
    (dict(variants='{ template = "A", weight = 1 }'), f"{C1}.variants", "expected an array of tables"),
    (dict(variants='["A", "B"]'), f"{C1}.variants[0]", "expected a table, got a string"),
    (dict(variants='[{ template = "A" }]'), f"{C1}.variants[0].weight", "missing (each variant needs template and weight)"),
    (dict(variants='[{ weight = 1 }]'), f"{C1}.variants[0].template", "missing"),
    (dict(variants='[{ template = "A", weight = 1 }, { template = "A", weight = 2 }]'), f"{C1}.variants[1].template",
     '"A" is also variants[0]\'s template'),
    (dict(variants='[{ template = "", weight = 1 }]'), f"{C1}.variants[0].template", "must not be empty"),
    (dict(variants='[{ template = 7, weight = 1 }]'), f"{C1}.variants[0].template", "expected a string"),
    (dict(variants='[{ template = "A", weight = 0 }]'), f"{C1}.variants[0].weight", "out of range (1 to 10,000)"),
    (dict(variants='[{ template = "A", weight = 10_001 }]'), f"{C1}.variants[0].weight", "out of range (1 to 10,000)"),
    (dict(variants='[{ template = "A", weight = 0.5 }]'), f"{C1}.variants[0].weight", "expected an integer, got a float"),
    (dict(variants='[{ template = "A", weight = 1, share = 0.5 }]'), f"{C1}.variants[0].share", "unknown key"),
    (dict(variants='[{ templat = "A", weight = 1 }]'), f"{C1}.variants[0].templat", "did you mean 'template'?"),
    (dict(variant=VARIANTS), f"{C1}.variant", "did you mean 'variants'?"),
]


@pytest.mark.parametrize("keys, key, fragment", CAMPAIGN_ERRORS)
def test_campaign_errors_name_the_file_and_the_key(tmp_path, keys, key, fragment):
    path = write(tmp_path, BASE + campaign_text(**keys))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message, message


@pytest.mark.parametrize("keys, shown", [
    (dict(when='"sms > 4294967296"'), "the constant of this side is 4,294,967,296;"),
    (dict(arg="9223372036854775808"), "9_223_372_036_854_775_808 is out of range"),
    (dict(end="20270212"), "20_270_212 is not a date"),
])
def test_numbers_in_errors_stay_readable_past_the_msisdn_mask(tmp_path, keys, shown):
    # the CLI masks every run of 7+ digits in an error (engine.privacy): a marketer who wrote a
    # large number must still see which number the message is about
    from engine.privacy import scrub
    path = write(tmp_path, BASE + campaign_text(**keys))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert shown in scrub(str(info.value)), scrub(str(info.value))


SECTION_ERRORS = [
    # (a whole file, key named in the message, fragment)
    ('[engin]\nutc_offset = "+08:00"', "engin", "unknown key (did you mean 'engine'?)"),
    ('[campaigns]\nx = 1', "campaigns", "did you mean 'campaign'?"),
    ("verbose = true", "verbose", "unknown key"),
    ('[engine]\nutc_offset = "+8"', "engine.utc_offset", 'is not a UTC offset like "+08:00"'),
    ('[engine]\nutc_offset = 8', "engine.utc_offset", "is not a UTC offset"),
    ('[engine]\nutc_offset = "+15:00"', "engine.utc_offset", "between -14:00 and +14:00"),
    ("[engine]\nmax_pending = 0", "engine.max_pending", "out of range"),
    ("[engine]\nmax_pending = -5", "engine.max_pending", "out of range"),
    ('[engine]\nmax_pending = "10"', "engine.max_pending", "expected an integer"),
    ("[engine]\nmax_pending = 1e6", "engine.max_pending", "expected an integer, got a float"),
    ("[engine]\nprofiles = 3", "engine.profiles", "expected a string"),
    ('[engine]\nprofiles = ""', "engine.profiles", "must not be empty"),
    ('[engine]\nthreads = 4', "engine.threads", "unknown key"),
    ("engine = 5", "engine", "expected a table"),
    ('[lists.more]\nx = "x.txt"', "lists.more", "expected a string, got a table"),
    ("[lists]\nnone = 5", "lists.none", "expected a string"),
    ('[lists]\n"bad name" = "x.txt"', "lists.bad name", "not a valid list name"),
    ('[areas]\nzone = ["a.txt"]', "areas.zone", "expected a string, got an array"),
    ('[lists]\ndnd = "d.txt"\n[policy]\nblacklist = ["dnd", "dnc"]', "policy.blacklist[1]", 'unknown list "dnc"'),
    ('[policy]\nblacklist = "dnd"', "policy.blacklist", "expected an array of strings"),
    ('[policy]\nquiet_hours = "22:00-22:00"', "policy.quiet_hours", "starts where it ends"),
    ('[policy]\nquiet_hours = "22-8"', "policy.quiet_hours", "is not hours"),
    ('[policy]\nmin_gap = "7"', "policy.min_gap", "is not a duration"),
    ("[policy]\nmax_per_day = -1", "policy.max_per_day", "out of range"),
    ('[policy]\nmax_per_day = "2"', "policy.max_per_day", "expected an integer"),
    ("[policy]\nmax_per_day = true", "policy.max_per_day", "expected an integer, got a boolean"),
    ('[policy]\ncooldown = "1d"', "policy.cooldown", "unknown key"),
    ('[policy]\nmax_in_window = 3', "policy.max_in_window", "expected a table, got an integer"),
    ("[policy]\nglobal_holdout = 0.00005", "policy.global_holdout", "not a multiple of 0.0001"),
    ("[policy]\nglobal_holdout = 1.5", "policy.global_holdout", "not between 0 and 1"),
    ("[policy]\nglobal_holdout = -0.02", "policy.global_holdout", "not between 0 and 1"),
    ('[policy]\nglobal_holdout = "2%"', "policy.global_holdout", "expected a number between 0 and 1"),
    ("[policy]\nglobal_holdout = true", "policy.global_holdout", "expected a number"),
    ("[policy]\nglobal_holdup = 0.02", "policy.global_holdup", "did you mean 'global_holdout'?"),
    ('[policy]\nmax_in_window = { contacts = 3 }', "policy.max_in_window.window", "missing"),
    ('[policy]\nmax_in_window = { window = "7d" }', "policy.max_in_window.contacts", "missing"),
    ('[policy]\nmax_in_window = { contacts = 0, window = "7d" }', "policy.max_in_window.contacts", "out of range (1 to 16)"),
    ('[policy]\nmax_in_window = { contacts = 17, window = "7d" }', "policy.max_in_window.contacts", "out of range (1 to 16)"),
    ('[policy]\nmax_in_window = { contacts = "3", window = "7d" }', "policy.max_in_window.contacts", "expected an integer"),
    ('[policy]\nmax_in_window = { contacts = 3, window = "0d" }', "policy.max_in_window.window", "longer than zero"),
    ('[policy]\nmax_in_window = { contacts = 3, window = "7" }', "policy.max_in_window.window", "is not a duration"),
    ('[policy]\nmax_in_window = { contacts = 3, window = "7d", per = "campaign" }', "policy.max_in_window.per",
     "unknown key"),
    ('[policy]\nmax_in_window = { contact = 3, window = "7d" }', "policy.max_in_window.contact",
     "did you mean 'contacts'?"),
    ('[counters]\ncalls = { flags = ["roaming"] }', "counters.calls.on", "missing"),
    ('[counters]\ncalls = { on = [] }', "counters.calls.on", "at least one event type"),
    ('[counters]\ncalls = { on = ["CALL"] }', "counters.calls.on[0]", "unknown event type"),
    ('[counters]\ncalls = { on = ["SMS_MO"], flags = ["roam"] }', "counters.calls.flags[0]", 'unknown flag "roam"'),
    ('[counters]\ncalls = { on = ["SMS_MO"], add = 2 }', "counters.calls.add", 'is not 1, "dur" or "dur_minutes"'),
    ('[counters]\ncalls = { on = ["SMS_MO"], add = true }', "counters.calls.add", "is not 1"),
    ('[counters]\ncalls = { on = ["SMS_MO"], add = "minutes" }', "counters.calls.add", "is not 1"),
    ('[counters]\ncalls = { on = ["SMS_MO"], window = "0d" }', "counters.calls.window", "longer than zero"),
    ('[counters]\ncalls = { on = ["SMS_MO"], window = 90 }', "counters.calls.window", "is not a duration"),
    ('[counters]\ncalls = { on = ["SMS_MO"], reset = "1d" }', "counters.calls.reset", "unknown key"),
    ('[counters]\ncalls = { on = ["SMS_MO"], period = "weekly" }', "counters.calls.period",
     '"weekly" is not one of day, week, month; did you mean "week"?'),
    ('[counters]\ncalls = { on = ["SMS_MO"], period = "year" }', "counters.calls.period", "is not one of day, week, month"),
    ('[counters]\ncalls = { on = ["SMS_MO"], period = 7 }', "counters.calls.period", "expected a string"),
    ('[counters]\ncalls = { on = ["SMS_MO"], period = "day", window = "1d" }', "counters.calls.period",
     "replaces window: give one of them, not both"),
    ('[counters]\ncalls = { on = ["ORDER"], arg = -1 }', "counters.calls.arg", "out of range"),
    ('[counters]\ncalls = { on = ["ORDER"], arg = "3001" }', "counters.calls.arg", "expected an integer"),
    ('[counters]\ncalls = "SMS_MO"', "counters.calls", "expected a table"),
    ('[markers]\nm = { flags = ["roaming"] }', "markers.m.on", "missing (a marker needs the event types that set it)"),
    ('[markers]\nm = { on = [] }', "markers.m.on", "at least one event type"),
    ('[markers]\nm = { on = ["LOW_BALANCE"] }', "markers.m.on[0]", "unknown event type"),
    ('[markers]\nm = { on = ["SMS_MO"], flags = ["roming"] }', "markers.m.flags[0]", 'did you mean "roaming"?'),
    ('[markers]\nm = { on = ["ORDER"], arg = -1 }', "markers.m.arg", "out of range"),
    ('[markers]\nm = { on = ["ORDER"], within = "1h" }', "markers.m.within", "unknown key"),
    ('[markers]\n"m m" = { on = ["ORDER"] }', "markers.m m", "not a valid marker name"),
    ('[markers]\nm = "ORDER"', "markers.m", "expected a table"),
    ("[event_types]\nTOP_UP = 31", "event_types.TOP_UP", "out of range (32 to 63)"),
    ("[event_types]\nTOP_UP = 64", "event_types.TOP_UP", "out of range (32 to 63)"),
    ('[event_types]\nTOP_UP = "32"', "event_types.TOP_UP", "expected an integer"),
    ("[event_types]\ntop_up = 32", "event_types.top_up", "upper-case name"),
    ('[event_types]\n"TOP UP" = 32', "event_types.TOP UP", "upper-case name"),
    ("[event_types]\nORDER = 40", "event_types.ORDER", "builtin event type (code 11)"),
    ("[event_types]\nA = 40\nB = 40", "event_types.B", "code 40 is already A"),
    ('[output]\nformat = "xml"', "output.format", '"xml" is not one of csv, jsonl, parquet'),
    ("[output]\nmax_records = 0", "output.max_records", "out of range"),
    ('[output]\nmax_age = "1"', "output.max_age", "is not a duration"),
    ('[output]\nmax_age = "-1h"', "output.max_age", "is not a duration"),
    ('[output]\ncompress = true', "output.compress", "unknown key"),
    ('[campaign]\nid = "c"', "campaign", "expected [[campaign]] tables"),
    (BASE + campaign_text() + "[channels]\nsms = { daily_budget = 0 }", "channels.sms.daily_budget", "out of range"),
    (BASE + campaign_text() + "[channels]\nsms = { daily_budget = 1.5 }", "channels.sms.daily_budget",
     "expected an integer"),
    (BASE + campaign_text() + "[channels]\nsms = { daily_budjet = 5 }", "channels.sms.daily_budjet",
     "unknown key (did you mean 'daily_budget'?)"),
    (BASE + campaign_text() + "[channels]\nsmss = { daily_budget = 5 }", "channels.smss",
     'no campaign uses channel "smss"; did you mean "sms"?'),
    (BASE + campaign_text() + "[channels]\npopup = { daily_budget = 5 }", "channels.popup",
     'no campaign uses channel "popup" (channels in use: sms)'),
    ("[channels]\nsms = { daily_budget = 5 }", "channels.sms", "no campaign uses a channel"),
    (BASE + campaign_text() + "[channels]\nsms = 5", "channels.sms", "expected a table, got an integer"),
    ("[channel]\nsms = 5", "channel", "did you mean 'channels'?"),
    ("campaign = [1]", "campaign[0]", "expected a table, got an integer"),
    (BASE + campaign_text() + campaign_text(), 'campaign[1] (id "c1").id', "duplicate campaign id (also campaign[0])"),
]


@pytest.mark.parametrize("text, key, fragment", SECTION_ERRORS)
def test_section_errors_name_the_file_and_the_key(tmp_path, text, key, fragment):
    path = write(tmp_path, text + "\n", name="sigmatch.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message, message


def test_trigger_filters_and_a_campaign_life(tmp_path):
    import datetime
    text = BASE + campaign_text(flags='["roaming", "long_distance"]', arg="0", enabled="false",
                                start='"2027-02-05"', end="2027-02-12")
    c = load_config(write(tmp_path, text)).campaigns[0]
    assert (c.flags, c.arg, c.enabled) == (3, 0, False)
    assert (c.start, c.end) == (datetime.date(2027, 2, 5), datetime.date(2027, 2, 12))
    same = load_config(write(tmp_path, BASE + campaign_text(start='"2027-02-05"', end='"2027-02-05"'))).campaigns[0]
    assert same.start == same.end and same.enabled and same.arg is None and same.flags == 0


def test_counter_periods_and_arg(tmp_path):
    text = ('[counters]\nd = { on = ["POWER_ON"], period = "day" }\nw = { on = ["SMS_MO"], period = "week" }\n'
            'm = { on = ["ORDER"], period = "month", arg = 3001 }\nplain = { on = ["SMS_MO"] }\n')
    counters = parse_config(text, tmp_path / "c.toml").counters
    assert [(k.period, k.window_ms, k.arg, k.starts) for k in counters] == [
        ("day", None, None, True), ("week", None, None, True), ("month", None, 3001, True), (None, None, None, False)]


@pytest.mark.parametrize("contacts", [1, 16])
def test_max_in_window(tmp_path, contacts):
    path = write(tmp_path, BASE + f'[policy]\nmax_in_window = {{ contacts = {contacts}, window = "7d" }}\n'
                 + campaign_text(exempt='["max_in_window", "min_gap"]'))
    config = load_config(path)
    assert config.policy.max_in_window == (contacts, 7 * 86_400_000)
    assert config.campaigns[0].exempt == {"max_in_window", "min_gap"}


@pytest.mark.parametrize("value, threshold", [("0", 0), ("0.02", 200), ("0.0001", 1), ("1", 10_000), ("0.9999", 9_999)])
def test_global_holdout(tmp_path, value, threshold):
    config = load_config(write(tmp_path, f"[policy]\nglobal_holdout = {value}\n"))
    assert config.policy.global_holdout_threshold == threshold


def test_variants(tmp_path):
    from engine.language.config import VariantSpec
    path = write(tmp_path, BASE + campaign_text(variants='[{ template = "RESCUE_A", weight = 1 }, '
                                                         '{ template = "RESCUE_B", weight = 10_000 }]')
                 + campaign_text(id='"c2"', template='"ONE"') + campaign_text(id='"c3"'))
    c1, c2, c3 = load_config(path).campaigns
    assert c1.variants == (VariantSpec("RESCUE_A", 1), VariantSpec("RESCUE_B", 10_000))
    assert (c1.template, c1.templates) == ("", ("RESCUE_A", "RESCUE_B"))
    # without variants, the one template (empty when the campaign names none, as ever)
    assert (c2.variants, c2.templates, c3.templates) == ((), ("ONE",), ("",))


def test_budgets(tmp_path):
    path = write(tmp_path, BASE + campaign_text(daily_budget="20_000", total_budget="300_000")
                 + campaign_text(id='"c2"', channel='"boss"') + "[channels]\nsms = { daily_budget = 500_000 }\nboss = {}\n")
    config = load_config(path)
    c1, c2 = config.campaigns
    assert (c1.daily_budget, c1.total_budget) == (20_000, 300_000)
    assert (c2.daily_budget, c2.total_budget) == (None, None)
    assert config.channel_budgets == {"sms": 500_000}
    assert config.channels == ("sms", "boss")


def test_markers_and_their_conditions(tmp_path):
    from engine.language.config import MarkerCondition, MarkerSpec
    text = ('[event_types]\nLOW_BALANCE = 40\n'
            '[markers]\nrecharged = { on = ["RECHARGE"] }\ntook = { on = ["ORDER"], arg = 3001, flags = ["roaming"] }\n'
            '[[campaign]]\nid = "c"\non = ["LOW_BALANCE"]\nchannel = "sms"\ndelay = "24h"\n'
            'after = [{ marker = "took", within = "1h" }, { marker = "recharged", within = "2d" }]\n'
            'not_after = { marker = "recharged", within = "3d" }\nabsent = ["recharged", "recharged"]\n')
    config = parse_config(text, tmp_path / "c.toml")
    assert config.markers == (MarkerSpec("recharged", (12,)), MarkerSpec("took", (11,), flags=2, arg=3001))
    c = config.campaigns[0]
    assert c.after == (MarkerCondition("took", 3_600_000), MarkerCondition("recharged", 2 * DAY))
    assert c.not_after == (MarkerCondition("recharged", 3 * DAY),)
    assert c.absent == ("recharged",)


def test_campaign_index_counts_in_file_order(tmp_path):
    text = BASE + campaign_text() + campaign_text(id='"c2"') + campaign_text(id='"crbt_school"', delay='"5x"')
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("campaigns.toml"))
    assert str(info.value) == ('campaigns.toml: campaign[2] (id "crbt_school").delay: '
                               '"5x" is not a duration like "5m" (a whole number with s, m, h or d)')


@pytest.mark.parametrize("text, line", [
    ('[engine]\nutc_offset = "+08:00"\nmax_pending = \n', 3),
    ('[engine]\nutc_offset = "+08:00\n', 2),
    ("[lists]\ndnd = 'a'\ndnd = 'b'\n", 3),
    ("\n\n\n[[campaign]\n", 4),
    ('[policy]\nmin_gap = 7d\n', 2),
])
def test_toml_syntax_errors_name_the_file_and_the_line(tmp_path, text, line):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: TOML syntax error: ")
    assert f"line {line}" in message


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[[campaign]]\nid = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_list_and_area_files_need_not_exist_yet(tmp_path):
    config = parse_config('[lists]\ndnd = "nowhere/dnd.txt"\n[areas]\nx = "nowhere/x.txt"\n', tmp_path / "c.toml")
    assert not config.lists["dnd"].exists()


def test_the_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    with pytest.raises(AttributeError):
        config.campaigns[0].priority = 5


def test_when_over_more_than_sixteen_counters_a_side(tmp_path):
    counters = "".join(f'k{i} = {{ on = ["SMS_MO"] }}\n' for i in range(17))
    ok = " + ".join(f"k{i}" for i in range(16))
    text = "[counters]\n" + counters + campaign_text(when=f'"{ok} > k16"')
    assert parse_config(text, tmp_path / "c.toml").campaigns[0].when == f"{ok} > k16"
    with pytest.raises(ConfigError) as info:
        parse_config("[counters]\n" + counters + campaign_text(when=f'"{ok} + k16 > 0"'), tmp_path / "c.toml")
    assert str(info.value).startswith(f"{tmp_path / 'c.toml'}: {C1}.when: this side of the comparison names "
                                      "17 counters; at most 16 at column 1")


def test_the_counter_condition_and_when_together(tmp_path):
    config = parse_config(BASE + campaign_text(counter='{ name = "sms", at_least = 2 }', when='"sms < 5"',
                                               anniversary='"birth_date"'), tmp_path / "c.toml")
    c = config.campaigns[0]
    assert (c.counter, c.at_least, c.when, c.anniversary) == ("sms", 2, "sms < 5", "birth_date")


def _profiles_csv(tmp_path, text):
    (tmp_path / "p.csv").write_text(text)
    return f'[engine]\nprofiles = "p.csv"\n'


@pytest.mark.parametrize("column, fragment", [
    ("arpu", "attribute 'arpu' holds numbers (int64), not ISO dates (YYYY-MM-DD)"),
    ("score", "attribute 'score' holds numbers (double), not ISO dates (YYYY-MM-DD)"),
    ("birth_dat", "unknown attribute 'birth_dat' (profile columns: arpu, birth_date, score); did you mean 'birth_date'?"),
])
def test_anniversary_attribute_errors_name_the_file_and_the_key(tmp_path, column, fragment):
    from engine.api import Engine
    engine = _profiles_csv(tmp_path, "msisdn,arpu,score,birth_date\n13800000001,5,1.5,1990-01-05\n")
    path = write(tmp_path, engine + campaign_text(anniversary=f'"{column}"'))
    with pytest.raises(ConfigError) as info:
        Engine(load_config(path))
    assert str(info.value) == f"{path}: campaign[0] (id \"c1\").anniversary: {fragment}"


@pytest.mark.parametrize("where", ["id", "channel", "list", "counter"])
def test_a_name_has_at_most_128_characters(tmp_path, where):
    """The language set no length: a campaign id of 5,000 characters went into every action
    record, and a channel's name longer than the file system's 255 bytes failed only when
    its directory was made. 128 is taken, 129 refused with the key and the length."""
    def text(name):
        lists = f'[lists]\n{name} = "l.txt"\n' if where == "list" else ""
        counters = f'[counters.{name}]\non = ["SMS_MO"]\nperiod = "day"\n' if where == "counter" else ""
        keys = {"id": f'"{name}"'} if where == "id" else {"channel": f'"{name}"'} if where == "channel" else {}
        return lists + counters + campaign_text(**keys)
    (tmp_path / "l.txt").write_text("13800000001\n")
    longest = "a" * 127 + "b"
    config = load_config(write(tmp_path, text(longest)))
    assert longest in ({c.id for c in config.campaigns} | {c.channel for c in config.campaigns} | set(config.lists)
                       | {c.name for c in config.counters})
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text(longest + "c")))
    cut = longest[:118] + "…"         # as the value is shown: a key holding the name is cut alike
    key = {"id": "campaign[0].id", "channel": f"{C1}.channel", "list": f"lists.{cut}",
           "counter": f"counters.{cut}"}[where]
    assert str(info.value).startswith(f"{tmp_path / 'campaigns.toml'}: {key}: ")
    assert str(info.value).endswith(" is 129 characters long; a name has at most 128")
    # a section's key holds the name itself: cut there too, so the line stays a line
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text("x" * 100_000)))
    assert len(str(info.value)) < 400 + len(str(tmp_path)) and "is 100,000 characters long" in str(info.value)


def test_an_error_found_with_the_profiles_names_the_file_as_given_and_the_campaign_by_its_table(tmp_path,
                                                                                                  monkeypatch):
    """Said as the loader says its own errors: the file as the user named it (it was made
    absolute), and the campaign by its table's place in the file and its id (it was the id
    alone), though the engine orders campaigns by priority."""
    from engine.api import Engine
    engine = _profiles_csv(tmp_path, "msisdn,arpu\n13800000001,5\n")
    path = write(tmp_path, engine + campaign_text() + campaign_text(id='"c2"', priority="9", where='"arpo > 1"'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Engine(load_config(Path(path.name)))
    assert str(info.value) == ("campaigns.toml: campaign[1] (id \"c2\").where: unknown attribute 'arpo' "
                               "(profile columns: arpu); did you mean 'arpu'?")
    config = load_config(Path(path.name))
    assert config.named == Path("campaigns.toml") and config.path == path
    assert [(c.id, c.index, c.key) for c in config.campaigns] == [("c2", 1, 'campaign[1] (id "c2")'),
                                                                 ("c1", 0, 'campaign[0] (id "c1")')]
    assert config == load_config(path)          # where a file was named from makes no other difference


def test_an_anniversary_column_of_nothing_but_nulls_is_no_error(tmp_path):
    from engine.api import Engine
    engine = _profiles_csv(tmp_path, "msisdn,birth_date\n13800000001,\n13800000002,\n")
    path = write(tmp_path, engine + campaign_text(anniversary='"birth_date"'))
    assert Engine(load_config(path)).malformed_dates == {"birth_date": 0}


_COUNTERS = '[counters]\nsms = { on = ["SMS_MO"] }\n'
_C1 = '[[campaign]]\nid = "c1"\non = ["SMS_MO"]\nchannel = "sms"\ntemplate = "T"\n'


@pytest.mark.parametrize("text", [
    '[counters]\nsms = { on = ["SMS_MO"], flags = ["roam"] }\n',
    '[counters]\nsms = { on = ["SMS_MO"], flags = ["xyz"] }\n',
    '[counters]\nsms = { on = ["SMS_MO"], period = "daily" }\n',
    '[counters]\nsms = { on = ["SMS_MO"], period = "day", window = "1d" }\n',
    _COUNTERS + _C1 + 'flags = ["roming"]\n',
    _COUNTERS + _C1 + 'start = "2027-2-5"\n',
    _COUNTERS + _C1 + 'end = "2027-02-30"\n',
    _COUNTERS + _C1 + 'start = "2027-03-01"\nend = "2027-02-28"\n',
    _COUNTERS + _C1.replace('"c1"', '"global"'),
    _COUNTERS + _C1 + 'when = "sms > 4294967296"\n',
    '[lists]\ndnd = "d.txt"\n[policy]\nblacklist = ["dnc"]\n',
    _C1 + 'variants = [{ template = "A", weight = 1 }, { template = "B", weight = 1 }]\n',
    _C1.replace('template = "T"\n', "variants = []\n"),
    _C1.replace('template = "T"\n', 'variants = [{ template = "A", weight = 1 }, { template = "A", weight = 2 }]\n'),
    _C1.replace('template = "T"\n', 'variants = [{ template = "A", weight = 0 }]\n'),
    _C1.replace('template = "T"\n', 'variants = [{ template = "A" }]\n'),
])
def test_the_real_messages_of_configuration_md_are_real(text):
    # docs/configuration.md, "Real messages": an operator greps the docs for the line they got
    with pytest.raises(ConfigError) as info:
        parse_config(text, "conf/campaigns.toml")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert f"`{info.value}`" in docs, str(info.value)
