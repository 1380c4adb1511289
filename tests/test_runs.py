"""`cnnpipe runs` and `cnnpipe compare`: every run's state and figures from its manifests."""
import json
import shutil

from conftest import invoke
from pipeline import runs


def _three_runs(tiny_run, tmp_path):
    root = tmp_path / "runs"
    for name in ("complete", "stale", "interrupted"):
        shutil.copytree(tiny_run["run"], root / name)
    (root / "stale" / "train" / "history.csv").write_text("epoch\n0\n")  # an output changed after the fact
    (root / "interrupted" / "eval" / "manifest.json").unlink()  # evaluate killed before it committed
    m = json.loads((root / "stale" / "eval" / "manifest.json").read_text())
    m["config"]["eval"]["batch_size"] = 7
    (root / "stale" / "eval" / "manifest.json").write_text(json.dumps(m))
    return root


def test_states_of_a_complete_a_stale_and_an_interrupted_run(tiny_run, tmp_path):
    root = _three_runs(tiny_run, tmp_path)
    assert runs.state(root / "complete") == ("complete", "")
    assert runs.state(root / "stale") == ("stale", "train output history.csv changed")
    assert runs.state(root / "interrupted") == ("interrupted", "evaluate did not finish")
    (root / "partial").mkdir()
    shutil.copytree(tiny_run["run"] / "data", root / "partial" / "data")
    assert runs.state(root / "partial") == ("partial", "until ingest")


def test_runs_table_through_the_cli_sorted_by_a_column(tiny_run, tmp_path):
    root = _three_runs(tiny_run, tmp_path)
    result = invoke(["runs", "--runs-dir", root, "--sort", "state"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in lines] == ["complete", "interrupted", "stale"]
    complete = next(line for line in lines if "complete" in line)
    card = json.loads((tiny_run["exported"] / "model_card.json").read_text())
    assert f"{card['files']['int8']['bytes']:,}" in complete and "small" in complete
    assert f"{100 * card['files']['int8']['parity']['accuracy']:.2f}%" in complete
    assert "interrupted (evaluate did not finish)" in result.output
    empty = invoke(["runs", "--runs-dir", tmp_path / "none"])
    assert empty.exit_code == 0 and "no runs under" in empty.output


def test_compare_shows_only_the_keys_that_differ(tiny_run, tmp_path):
    root = _three_runs(tiny_run, tmp_path)
    result = invoke(["compare", "--runs-dir", root, "complete", "stale"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert any("eval.batch_size" in r and "256" in r and "7" in r for r in rows)
    assert not any("train.epochs" in r for r in rows)
    assert any("state" in r and "complete" in r and "stale" in r for r in rows)
    missing = invoke(["compare", "--runs-dir", root, "complete", "nosuch"])
    assert missing.exit_code == 2 and "nosuch: no such run" in missing.output
