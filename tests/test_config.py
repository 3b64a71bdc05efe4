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


def test_a_bad_set_is_blamed_on_the_command_line_not_on_the_file(tmp_path):
    # method.kind is on line 2 of the file; the bad value came from --set, so the message must say so.
    path = write(tmp_path, "method:\n  kind: lora\n")
    with pytest.raises(TuneError) as err:
        cfg.load(path, ["method.kind=qlorra"])
    text = str(err.value)
    assert "--set method.kind=qlorra" in text and "line 2" not in text and str(path) not in text
    assert "full, freeze, lora, qlora" in text and "did you mean qlora" in text


def test_a_set_of_a_whole_section_is_blamed_for_the_keys_under_it(tmp_path):
    path = write(tmp_path, "method:\n  lora:\n    r: 8\n")
    with pytest.raises(TuneError) as err:
        cfg.load(path, ["method.lora={r: 0}"])
    assert "--set method.lora={r: 0}" in str(err.value) and "line 3" not in str(err.value)


def test_with_overrides_names_the_set_too():
    with pytest.raises(TuneError, match=r"--set train\.lr=-1"):
        cfg.with_overrides(cfg.RunConfig(), ["train.lr=-1"])


def test_file_errors_still_name_the_file_and_line_beside_good_overrides(tmp_path):
    path = write(tmp_path, "train:\n  lr: -1\n")
    with pytest.raises(TuneError) as err:
        cfg.load(path, ["train.max_steps=3"])
    assert "line 2" in str(err.value) and str(path) in str(err.value) and "--set" not in str(err.value)


@pytest.mark.parametrize("written, key, expected", [
    ("learning_rate", "train.lr", 1e-4),
    ("train.learning_rate", "train.lr", 1e-4),
    ("num_train_epochs", "train.epochs", 3.0),
    ("per_device_train_batch_size", "train.batch_size", 2),
    ("train.gradient_accumulation_steps", "train.grad_accum", 4),
    ("lr_scheduler_type", "train.scheduler", "linear"),
    ("warmup_ratio", "train.warmup_ratio", 0.1),
    ("save_steps", "train.save_steps", 7),
    ("lora_rank", "method.lora.r", 4),
    ("method.lora_alpha", "method.lora.alpha", 64),
    ("method.lora.lora_dropout", "method.lora.dropout", 0.1),
    ("cutoff_len", "data.max_length", 256),
    ("max_samples", "data.max_samples", 50),
    ("val_size", "data.val_size", 0.1),
    ("finetuning_type", "method.kind", "freeze"),
])
def test_foreign_key_names_set_our_keys_in_set_and_in_files(tmp_path, written, key, expected):
    def value_of(config):
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        return node

    want = pytest.approx(expected) if isinstance(expected, float) else expected
    assert cfg.canonical_key(written) == key
    assert value_of(cfg.load(write(tmp_path, "{}\n"), [f"{written}={expected}"])) == want
    # The same name in a file, nested as written.
    *sections, leaf = written.split(".")
    indent = "  " * len(sections)
    yaml_text = "".join(f"{'  ' * i}{s}:\n" for i, s in enumerate(sections)) + f"{indent}{leaf}: {expected}\n"
    assert value_of(cfg.load(write(tmp_path, yaml_text))) == want


def test_a_llama_factory_style_flat_file_loads():
    raw = {"model_name_or_path": "demo:tiny-llama", "finetuning_type": "lora", "lora_rank": 4,
           "lora_target": "q_proj,v_proj", "cutoff_len": 64, "learning_rate": 1.0e-4, "num_train_epochs": 2.0,
           "bf16": False, "fp16": True}
    config = cfg.from_dict(raw)
    assert config.method.lora.target_modules == ("q_proj", "v_proj") and config.train.precision == "fp16"
    assert config.data.max_length == 64 and config.train.epochs == 2.0 and config.method.lora.r == 4
    assert cfg.from_dict({"lora_target": "all"}).method.lora.target_modules == "all-linear"
    assert cfg.from_dict({"bf16": True}).train.precision == "bf16"
    assert cfg.from_dict({"bf16": False}).train.precision == "auto"  # "not bf16" sets nothing


def test_an_override_by_foreign_name_replaces_the_files_own_key(tmp_path):
    path = write(tmp_path, "train:\n  lr: 5.0e-3\n")
    assert cfg.load(path, ["learning_rate=1e-4"]).train.lr == pytest.approx(1e-4)


def test_one_value_under_two_names_in_a_file_is_refused(tmp_path):
    path = write(tmp_path, "train:\n  lr: 1.0e-4\nlearning_rate: 2.0e-4\n")
    with pytest.raises(TuneError) as err:
        cfg.load(path)
    assert "`learning_rate`" in str(err.value) and "`train.lr`" in str(err.value) and "line 3" in str(err.value)
    with pytest.raises(TuneError, match="`fp16` and `bf16` both set `train.precision`"):
        cfg.from_dict({"bf16": True, "fp16": True})


def test_an_aliased_value_error_names_the_name_as_written(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: demo:tiny-llama\nlearning_rate: -1\n")
    with pytest.raises(TuneError) as err:
        cfg.load(path)
    assert "line 3, key learning_rate" in str(err.value) and "must be positive" in str(err.value)


@pytest.mark.parametrize("written, suggestion", [
    ("train.learning_rat", "train.lr"),
    ("learnig_rate", "train.lr"),
    ("train.batchsize", "train.batch_size"),
    ("lora_rnk", "method.lora.r"),
])
def test_an_unknown_key_near_a_foreign_name_suggests_our_key(written, suggestion):
    with pytest.raises(TuneError) as err:
        cfg.with_overrides(cfg.RunConfig(), [f"{written}=1"])
    assert f"Unknown config key `{written}`" in str(err.value) and f"Did you mean `{suggestion}`?" in str(err.value)


def test_a_foreign_name_outside_its_section_is_not_taken():
    assert cfg.canonical_key("data.learning_rate") == "data.learning_rate"
    with pytest.raises(TuneError, match="Unknown config key `data.learning_rate`"):
        cfg.from_dict({"data": {"learning_rate": 1e-4}})
