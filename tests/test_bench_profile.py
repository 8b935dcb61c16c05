"""experiments.bench.profile: per-model top operators by self CPU time, a CSV, one-line errors."""
import csv

from experiments.bench import profile


def test_profile_writes_the_top_operators_of_each_model(tmp_path, capsys):
    assert profile.main(["--models", "dense", "moe", "--steps", "2", "--warmup", "1", "--top", "4",
                         "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "profile.csv").open()))
    assert [r["model"] for r in rows] == ["dense"] * 4 + ["moe"] * 4
    for model in ("dense", "moe"):
        mine = [r for r in rows if r["model"] == model]
        shares = [float(r["share_of_step"]) for r in mine]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0
        assert all(float(r["calls_per_step"]) > 0 for r in mine)
    assert "moe:" in capsys.readouterr().out
    assert (tmp_path / "env.json").is_file()


def test_profile_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert profile.main(["--steps", "0", "--out", str(tmp_path)]) == 2
    assert profile.main(["--models", "dense", "nosuch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --steps") and err[1].startswith("error: model=nosuch: no such option")
