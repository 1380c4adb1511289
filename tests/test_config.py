"""Config tree: defaults, YAML, dotted overrides, and one clear line for every bad value."""
import pytest

from conftest import DEFAULT_CONFIG, invoke
from pipeline import config
from pipeline.errors import ConfigError


def test_defaults_and_yaml_and_overrides(tmp_path):
    cfg = config.load(DEFAULT_CONFIG, ["train.epochs=7", "model.filters=[4, 8]", "data.image_size=[16, 16]"])
    assert cfg.data.source == "digits"
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.model.filters == [4, 8]
    assert cfg.data.image_size == [16, 16]
    assert cfg.train.learning_rate == pytest.approx(0.003)
    assert config.load(None).train.epochs == config.TrainConfig().epochs


def test_int_is_accepted_for_float_and_kept_float():
    cfg = config.load(None, ["train.learning_rate=1"])
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=abc", "train.epochs: expected an integer, got 'abc'"),
    ("train.nosuchkey=1", "train.nosuchkey: unknown key"),
    ("nosection.key=1", "nosection: unknown section"),
    ("train.epochs=0", "train.epochs: 0 is below the minimum 1"),
    ("train.batch_size=-4", "train.batch_size: -4 is below the minimum 1"),
    ("train.batch_size=1.5", "train.batch_size: expected an integer"),
    ("model.padding=full", "model.padding: 'full' is not one of same, valid"),
    ("train.deterministic=maybe", "train.deterministic: expected true or false"),
    ("data.image_size=[0, 8]", "data.image_size: expected [] or [height, width]"),
    ("export.formats=[int4]", "export.formats"),
    ("noequals", "expected section.key=value"),
    ("export.max_accuracy_drop=.nan", "export.max_accuracy_drop: expected a finite number"),
])
def test_bad_values_raise_config_error_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.load(None, [override])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n  batch_size: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: YAML syntax error"):
        config.load(bad)


def test_yaml_unknown_key_and_wrong_section_shape(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="train.epoch: unknown key"):
        config.load(bad)
    bad.write_text("train: 3\n")
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        config.load(bad)


def test_describe_lists_every_key_with_help():
    rows = config.describe()
    keys = [r[0] for r in rows]
    assert "train.epochs" in keys and "export.max_accuracy_drop" in keys and "augment.mixup" in keys
    assert all(r[3] for r in rows)


@pytest.mark.parametrize("args, key", [
    (["train", "--set", "train.epochs=abc"], "train.epochs"),
    (["train", "--set", "train.nosuchkey=1"], "train.nosuchkey"),
    (["run", "--set", "train.batch_size=0"], "train.batch_size"),
    (["ingest", "--config", "missing.yaml"], "missing.yaml"),
])
def test_cli_bad_config_exits_2_with_one_line_and_writes_nothing(workdir, args, key):
    result = invoke(args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.output
    assert not (workdir / "runs").exists()


def test_cli_config_lists_keys(workdir):
    result = invoke(["config", "--config", DEFAULT_CONFIG, "--set", "train.epochs=3"])
    assert result.exit_code == 0
    assert "train.epochs" in result.output and "= 3" in result.output


def test_bare_on_off_in_yaml_read_as_strings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: off\n")
    assert config.load(path).train.mixed_precision == "off"
    assert config.load(None, ["train.mixed_precision=on"]).train.mixed_precision == "on"


def test_override_does_not_hide_a_bad_section_in_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: 5\n")
    with pytest.raises(ConfigError, match="data: expected a mapping of keys"):
        config.load(path, ["data.seed=1"])
