"""Inputs a fuzzer finds in seconds (issue 8): each is a ConfigError or LoadError that names
the file and the key or line, never another exception, and none is read whole first."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.language.config import load_config, parse_config
from engine.errors import ConfigError, LoadError
from loaders.areas import load_area
from loaders.lists import load_list
from loaders.tabular import MAX_HEADER_BYTES
from loaders.profiles import load_profiles

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "crbt_school"


@pytest.fixture
def example(tmp_path) -> Path:
    """A copy of a working example to spoil."""
    shutil.copytree(EXAMPLE, tmp_path / "ex", ignore=shutil.ignore_patterns("*.msgpack", "*.py"))
    return tmp_path / "ex"


def spoil(example: Path, old: str, new: str) -> Path:
    path = example / "campaigns.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_an_integer_of_thousands_of_digits_names_its_line_and_key(example):
    path = spoil(example, "max_per_day = 2", "max_per_day = " + "9" * 5000)
    with pytest.raises(ConfigError, match=r"campaigns\.toml: line \d+: max_per_day: a number with too many digits"):
        load_config(path)


def test_an_integer_just_inside_pythons_limit_is_shown_by_its_length(example):
    path = spoil(example, "max_per_day = 2", "max_per_day = " + "9" * 4200)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "policy.max_per_day: a 4,200-digit number is out of range" in str(caught.value)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("value", ["[" * 3000 + "]" * 3000, "{a=" * 3000 + "1" + "}" * 3000])
def test_deep_nesting_names_its_line_and_key(tmp_path, value):
    text = '[engine]\nutc_offset = "+08:00"\n\n[lists]\nodd = ' + value + "\n"
    with pytest.raises(ConfigError, match=r"c\.toml: line 5: odd: arrays or tables nested too deeply"):
        parse_config(text, tmp_path / "c.toml")


@pytest.mark.parametrize("digits", [19, 20, 9000])
def test_a_long_integer_literal_in_where_is_refused_on_its_text(example, digits):
    path = spoil(example, "arpu >= 50", "arpu >= " + "9" * digits)
    with pytest.raises(ConfigError, match=r"where: integer too large \(more than 64 bits\)"):
        load_config(path)


def test_the_largest_int64_literal_in_where_is_accepted(example):
    path = spoil(example, "arpu >= 50", f"arpu >= {2**63 - 1}")
    assert load_config(path).campaigns


def test_a_huge_exponent_in_where_is_refused(example):
    path = spoil(example, "arpu >= 50", "arpu >= 1e999999999")
    with pytest.raises(ConfigError, match="where: number too large"):
        load_config(path)


def test_a_nul_byte_in_a_path_names_the_key(example):
    path = spoil(example, 'profiles   = "profiles.csv"', 'profiles = "prof\\u0000iles.csv"')
    with pytest.raises(ConfigError, match=r"engine\.profiles: a path cannot hold a NUL byte"):
        load_config(path)
    path = spoil(example, '"lists/dnd.txt"', '"lists/\\u0000dnd.txt"')
    with pytest.raises(ConfigError, match=r"lists\.dnd: a path cannot hold a NUL byte"):
        load_config(path)


def test_a_nul_byte_in_the_configuration_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load_config(str(tmp_path / "a\0b.toml"))


@pytest.mark.parametrize("loader, column", [(load_profiles, "msisdn"), (load_list, "msisdn"), (load_area, "cell")])
@pytest.mark.parametrize("field_bytes", [200_000, MAX_HEADER_BYTES + 10])
def test_a_huge_csv_header_field_is_a_load_error_naming_the_file(tmp_path, loader, column, field_bytes):
    path = tmp_path / "wide.csv"
    path.write_text(column + "x" * field_bytes + "\n1\n")
    with pytest.raises(LoadError, match=r"wide\.csv: line 1: "):
        loader(path)


def test_a_header_without_a_line_break_is_not_read_whole(tmp_path):
    """A 64 MB file of one line is refused after MAX_HEADER_BYTES, not read into memory."""
    path = tmp_path / "flat.csv"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    with pytest.raises(LoadError, match=r"flat\.csv: line 1: the header line is longer than 1,048,576 characters"):
        load_list(path)


def test_a_header_that_is_not_utf8_is_a_load_error(tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes(b"msisdn,\xc8\xab\xc7\xf2\xcd\xa8\n13800000001,a\n")
    with pytest.raises(LoadError, match=r"gbk\.csv: line 1: not UTF-8"):
        load_profiles(path)


@pytest.mark.parametrize("spoiled", [
    ("max_per_day = 2", "max_per_day = " + "9" * 5000),
    ('[policy]', "x = " + "[" * 3000 + "]" * 3000 + "\n[policy]"),
    ("arpu >= 50", "arpu >= " + "9" * 9000),
])
def test_check_prints_one_line_for_each(example, spoiled):
    path = spoil(example, *spoiled)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "campaigns.toml" in done.stderr
