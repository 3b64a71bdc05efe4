"""Config loading: defaults, YAML round trip, --set overrides, and the messages for bad configs."""
import pytest

from core import config as cfg
from core.errors import TuneError


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_round_trip_keeps_every_value(tmp_path):
    original = cfg.from_dict({"model": {"name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"},
                              "method": {"kind": "qlora", "lora": {"r": 16, "target_modules": ["q_proj", "v_proj"]}},
                              "train": {"lr": 1e-4, "max_steps": 30}})
    path = tmp_path / "c.yaml"
    cfg.save(original, path)
    assert cfg.load(path) == original


def test_set_overrides_take_yaml_scalars_and_lists(tmp_path):
    path = write(tmp_path, "method:\n  kind: full\n")
    loaded = cfg.load(path, ["method.kind=lora", "train.max_steps=30", "method.lora.target_modules=[q_proj, v_proj]",
                             "train.gradient_checkpointing=true", "train.lr=3e-4"])
    assert loaded.method.kind == "lora"
    assert loaded.train.max_steps == 30
    assert loaded.method.lora.target_modules == ("q_proj", "v_proj")
    assert loaded.train.gradient_checkpointing is True
    assert loaded.train.lr == pytest.approx(3e-4)


def test_mistyped_key_names_file_line_and_suggests_the_right_key(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: demo:tiny-llama\ntrain:\n  lr: 0.001\n  batchsize: 8\n")
    with pytest.raises(TuneError) as err:
        cfg.load(path)
    text = str(err.value)
    assert "train.batchsize" in text and "line 5" in text and str(path) in text
    assert "train.batch_size" in text


def test_wrong_type_names_the_dotted_key(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: eight\n")
    with pytest.raises(TuneError, match=r"train\.batch_size.*whole number"):
        cfg.load(path)


@pytest.mark.parametrize("override, key", [
    ("train.lr=-0.1", "train.lr"),
    ("method.lora.r=0", "method.lora.r"),
    ("method.kind=lorra", "method.kind"),
    ("method.quant.bits=3", "method.quant.bits"),
    ("data.max_length=2", "data.max_length"),
])
def test_out_of_range_values_are_refused_with_their_key(tmp_path, override, key):
    with pytest.raises(TuneError) as err:
        cfg.load(write(tmp_path, "{}\n"), [override])
    assert key in str(err.value)


def test_unknown_method_suggests_the_nearest():
    with pytest.raises(TuneError, match="did you mean lora"):
        cfg.from_dict({"method": {"kind": "lorra"}})


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: [unclosed\ntrain:\n  lr: 1\n")
    with pytest.raises(TuneError, match="line"):
        cfg.load(path)


def test_missing_config_file_says_what_to_do(tmp_path):
    with pytest.raises(TuneError, match="does not exist"):
        cfg.load(tmp_path / "nope.yaml")
