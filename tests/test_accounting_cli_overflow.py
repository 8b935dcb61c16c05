"""accounting cost: non-finite results are errors, JSON never holds Infinity/NaN, --year is checked
(issue 16, item 12)."""
import json

import pytest

from accounting.cli import main

BASE = ["cost", "--config", "deepseek-v3", "--seq-len", "4096"]


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_overflowing_tokens_are_one_line_errors(capsys, fmt):
    assert main(BASE + ["--tokens", "1e300", "--format", fmt]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "overflow" in err and "inf" in err


@pytest.mark.parametrize("year", ["-1000000", "nan", "inf", "1e308", "abc"])
def test_year_is_checked(capsys, year):
    assert main(BASE + ["--tokens", "1e12", "--year", year]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: argument --year") and err.count("\n") == 1


def test_json_is_strict(capsys):
    assert main(BASE + ["--tokens", "1e12", "--year", "2031", "--format", "json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["year"] == 2031 and data["cost_usd_at_year"] == pytest.approx(data["cost_usd"] / 8)
