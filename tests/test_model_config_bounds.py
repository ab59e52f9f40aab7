"""The [model] and [distill] values a run is refused before any tensor is allocated: non-finite numbers,
zero round lengths, and models whose training state cannot fit in memory (the closed-form parameter count
checked against the built model)."""
import dataclasses

import pytest

from scale.cli import main as scale_main
from scale.model.cost import TRAINING_BYTES_PER_PARAMETER, check_fits, config_parameter_count
from scale.model.dit import DiT, DiTConfig, parameter_count

pytestmark = pytest.mark.usefixtures("token_cache")


@pytest.mark.parametrize("labels,qk_norm,vocab,mask_id,num_mask", [
    ("rand", False, 50, 49, 0), ("randn", True, 20, 20, 0), ("learnable", False, 31, 31, 0),
    ("finite", True, 20, 19, 5), ("none", False, 50, 50, 0)])
def test_the_closed_form_parameter_count_is_the_built_models(labels, qk_norm, vocab, mask_id, num_mask):
    config = DiTConfig(labels=labels, qk_norm=qk_norm, vocab_size=vocab, mask_id=mask_id, num_mask=num_mask,
                       label_dim=7, hidden=48, heads=4, blocks=3, cond=24)
    assert config_parameter_count(config) == parameter_count(DiT(config))


@pytest.mark.parametrize("key,value", [("blocks", 10**8), ("hidden", 10**7), ("label_dim", 10**9), ("cond", 10**7)])
def test_a_model_too_large_for_memory_is_refused_naming_the_largest_value_that_fits(key, value):
    config = DiTConfig(vocab_size=100, mask_id=100, **{key: value})
    memory = 2**30
    with pytest.raises(ValueError, match=f"^model.{key}: {value} needs .* the largest that fits is") as err:
        check_fits(config, memory)
    largest = int(str(err.value).rsplit(" ", 1)[1])
    step = 2 * config.dims.heads if key == "hidden" else 1
    fits = dataclasses.replace(config, **{key: largest})
    assert config_parameter_count(fits) * TRAINING_BYTES_PER_PARAMETER <= memory
    over = dataclasses.replace(config, **{key: largest + step})
    assert config_parameter_count(over) * TRAINING_BYTES_PER_PARAMETER > memory
    check_fits(fits, memory)


def test_a_named_size_too_large_for_memory_is_refused():
    with pytest.raises(ValueError, match="^model.size: 'large' needs .* GiB"):
        check_fits(DiTConfig(size="large", vocab_size=50258, mask_id=50257), 2**30)


@pytest.mark.parametrize("override,expected", [
    ("model.softcap=nan", "model.softcap: expected a finite number >= 0"),
    ("model.softcap=inf", "model.softcap: expected a finite number >= 0"),
    ("model.label_scale=nan", "model.label_scale: expected a finite number > 0"),
    ("model.label_scale=-1", "model.label_scale: expected a finite number > 0"),
    ("distill.grow_every=0", "distill.grow_every: expected an integer >= 1"),
    ("distill.teacher_steps=1", "distill.teacher_steps: expected an integer >= 2"),
    ("model.blocks=100000000", "model.blocks: 100000000 needs"),
    ("model.hidden=10000000", "model.hidden: 10000000 needs"),
    ("model.label_dim=100000000", "model.label_dim: 100000000 needs"),
])
def test_train_refuses_bad_model_values_before_any_work(capsys, tmp_path, override, expected):
    out = tmp_path / "run"
    assert scale_main(["train", "--config", "tiny-cpu", "--out", str(out), "--set", override]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert not (out / "state.json").exists() and not any(out.glob("**/*.safetensors"))


@pytest.mark.parametrize("text,expected", [
    (b"model = 5\n", "model: expected a section of keys ([model] in TOML), got 5"),
    (b'x = "\xff\xfe"\n', "is not UTF-8 text"),
])
def test_a_malformed_config_file_is_named(capsys, tmp_path, text, expected):
    path = tmp_path / "c.toml"
    path.write_bytes(text)
    assert scale_main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_import_refuses_a_non_finite_softcap(capsys, tmp_path):
    assert scale_main(["import-mdlm", "--from", str(tmp_path / "absent"), "--out", str(tmp_path / "o"),
                       "--softcap", "nan"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "softcap" in lines[0], lines
