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


# ---- hostile inputs: YAML 1.1 floats, scalar sizes, 32-bit seeds, keys no stage reads, empty dest -------
@pytest.mark.parametrize("text, expected", [("1e-3", 0.001), ("5E-4", 0.0005), ("-2.5e+1", -25.0),
                                            ("3e2", 300.0)])
def test_exponent_without_a_dot_is_a_float_in_yaml_and_in_set(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  weight_decay: 0.5\nexport:\n  max_accuracy_drop: {text}\n")
    if not 0 <= expected <= 100:
        with pytest.raises(ConfigError, match="export.max_accuracy_drop: .* (below|above)"):
            config.load(path)
        return
    cfg = config.load(path, [f"train.learning_rate={text}"])
    assert cfg.export.max_accuracy_drop == expected and isinstance(cfg.export.max_accuracy_drop, float)
    assert cfg.train.learning_rate == expected and isinstance(cfg.train.learning_rate, float)


def test_exponent_text_stays_an_error_for_int_and_str_keys():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer, got '1e3'"):
        config.load(None, ["train.epochs=1e3"])
    assert config.load(None, ["data.tfds_dir=1e3"]).data.tfds_dir == "1e3"
    with pytest.raises(ConfigError, match="train.learning_rate: expected a number, got '1e-'"):
        config.load(None, ["train.learning_rate=1e-"])


def test_scalar_image_size_means_a_square(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  image_size: 28\n")
    assert config.load(path).data.image_size == [28, 28]
    assert config.load(None, ["data.image_size=16"]).data.image_size == [16, 16]
    assert config.load(None, ["data.image_size=[12, 20]"]).data.image_size == [12, 20]
    for bad in ("0", "-3", "true"):
        with pytest.raises(ConfigError, match="data.image_size"):
            config.load(None, [f"data.image_size={bad}"])


@pytest.mark.parametrize("key", ["data.seed", "model.seed", "train.seed"])
def test_seed_must_fit_32_bits(key):
    assert getattr(getattr(config.load(None, [f"{key}=4294967295"]), key.split(".")[0]), "seed") == 2**32 - 1
    with pytest.raises(ConfigError, match=f"^{key}: 4294967296 is above the maximum 4294967295 "):
        config.load(None, [f"{key}=4294967296"])
    with pytest.raises(ConfigError, match=f"^{key}: {10**30} is above the maximum 4294967295 "):
        config.load(None, [f"{key}={10**30}"])


@pytest.mark.parametrize("override, message", [
    ("data.source=nosuchdataset", "data.source: unknown source 'nosuchdataset'"),
    ("data.source=tfds:", "data.source: tfds: needs an argument"),
    ("data.fallback=nosuch:dir", "data.fallback: unknown source 'nosuch:dir'"),
    ("data.fallback=idx:", "data.fallback: idx: needs an argument"),
    ("export.dest=", "export.dest: must not be empty"),
    ("export.dest='   '", "export.dest: must not be empty"),
])
def test_keys_are_validated_at_load_whichever_stage_reads_them(override, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        config.load(None, [override])
    assert config.load(None, ["data.fallback=idx:/usr/share/datasets/fashion-mnist"]).data.fallback


@pytest.mark.parametrize("args, needle", [
    (["train", "--set", "data.source=nosuchdataset"], "data.source: unknown source 'nosuchdataset'"),
    (["export", "--set", "data.fallback=nope:x"], "data.fallback: unknown source 'nope:x'"),
    (["evaluate", "--set", "export.dest= "], "export.dest: must not be empty"),
    (["build", "--set", "train.seed=4294967296"], "train.seed: 4294967296 is above the maximum 4294967295"),
    (["train", "--set", "train.learning_rate=1e-x"], "train.learning_rate: expected a number, got '1e-x'"),
    (["train", "--set", "train.optimizer=rmsprop"], "train.optimizer: 'rmsprop' is not one of adam, sgd"),
])
def test_cli_validates_keys_the_stage_does_not_read(workdir, args, needle):
    result = invoke([*args, "--config", DEFAULT_CONFIG, "--run", "r"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {needle}") and "Traceback" not in result.output
    assert not (workdir / "runs").exists() and not (workdir / "exported").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (DEFAULT_CONFIG.parent).glob("*.yaml")))
def test_every_shipped_config_loads_and_names_a_known_source(name):
    """Every file in configs/ passes validation, so a typo in one fails here, not in a user's first run."""
    from pipeline import sources

    cfg = config.load(DEFAULT_CONFIG.parent / name, [])
    kind, _ = sources.parse(cfg.data.source)
    assert kind in sources.LOADERS
    assert cfg.train.epochs >= 1 and cfg.export.formats
