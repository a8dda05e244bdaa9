"""Config round trips, overrides and the errors a user sees."""

from __future__ import annotations

import pytest

from cpcaudio.config import CPCConfig
from cpcaudio.errors import ConfigError


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    config = CPCConfig().with_overrides(["context.hidden_dim=128", "encoder.strides=[5,4,2,2,4]", "optim.betas=[0.8,0.99]"])
    path = tmp_path / f"config{suffix}"
    config.save(path)
    loaded = CPCConfig.load(path)
    assert loaded == config
    assert loaded.context.hidden_dim == 128
    assert loaded.encoder.strides == (5, 4, 2, 2, 4)
    assert loaded.optim.betas == (0.8, 0.99)


def test_partial_file_keeps_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("predictor:\n  num_negatives: 64\n")
    config = CPCConfig.load(path)
    assert config.predictor.num_negatives == 64
    assert config.encoder.hidden_dim == CPCConfig().encoder.hidden_dim  # the untouched sections keep the defaults
    assert config.predictor.num_steps == CPCConfig().predictor.num_steps


def test_unknown_key_names_the_key_and_suggests():
    with pytest.raises(ConfigError) as error:
        CPCConfig().with_overrides(["context.hidden=128"])
    message = str(error.value)
    assert "context.hidden" in message and "hidden_dim" in message


def test_unknown_section_and_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("encoder:\n  channels: 3\n")
    with pytest.raises(ConfigError, match=r"encoder\.channels.*allowed here: in_channels"):
        CPCConfig.load(path)
    with pytest.raises(ConfigError, match="unknown config key 'model.x'"):
        CPCConfig().with_overrides(["model.x=1"])


@pytest.mark.parametrize(
    "assignment,fragment",
    [
        ("encoder.normalization=group", "must be one of batch, channel, layer, none"),
        ("predictor.num_negatives=-3", "must be > 0"),
        ("context.hidden_dim=abc", "must be an integer"),
        ("optim.learning_rate=fast", "must be a number"),
        ("encoder.strides=[5,4]", "one stride per layer"),
        ("train.compile=maybe", "true or false"),
        ("context.hidden_dim", "section.key=value"),
    ],
)
def test_bad_values_are_rejected_clearly(assignment, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        CPCConfig().with_overrides([assignment])


def test_malformed_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("encoder: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        CPCConfig.load(path)


def test_retired_keys_of_old_checkpoints_are_dropped_but_not_settable(monkeypatch):
    import cpcaudio.config as config_module

    monkeypatch.setitem(config_module.RETIRED_KEYS, "data.old_knob", "an earlier version wrote it")
    old = CPCConfig().to_dict()
    old["data"]["old_knob"] = 2
    assert CPCConfig.from_dict(old) == CPCConfig()
    with pytest.raises(ConfigError, match="old_knob"):
        CPCConfig().with_overrides(["data.old_knob=2"])


def test_num_workers_of_old_checkpoints_is_a_real_setting_again():
    old = CPCConfig().to_dict()
    old["data"]["num_workers"] = 2  # written by cpcaudio 0.1 into every checkpoint, ignored then
    assert CPCConfig.from_dict(old).data.num_workers == 2
    assert CPCConfig().with_overrides(["data.num_workers=3"]).data.num_workers == 3
