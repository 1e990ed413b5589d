"""Presets: schema validation (one test per error kind), extends, overrides, TOML round trips,
the shipped presets, lookup from any directory and device resolution."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest

from rltui import presets
from rltui.presets import (
    Preset,
    PresetError,
    apply_overrides,
    bundled_presets_dir,
    check_action_space,
    find_preset,
    list_presets,
    load_preset,
    preset_from_toml_text,
    preset_to_toml,
    resolve_device,
)

SHIPPED = ["halfcheetah-mpo", "halfcheetah-trpo", "hopper-mpo", "hopper-trpo", "pendulum-mpo",
           "pendulum-trpo", "walker2d-mpo", "walker2d-trpo"]

MPO_TEXT = 'algo = "mpo"\n[env]\nid = "Pendulum-v1"\n'
TRPO_TEXT = 'algo = "trpo"\n[env]\nid = "Pendulum-v1"\n'


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Run every test from an empty directory: presets must not depend on the repo being the cwd
    (and MuJoCo's MUJOCO_LOG.TXT, if any, lands there)."""
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(text: str, source: str = "x.toml") -> str:
    with pytest.raises(PresetError) as caught:
        preset_from_toml_text(text, source)
    message = str(caught.value)
    assert "\n" not in message
    return message


def override_error(preset: Preset, *overrides: str) -> str:
    with pytest.raises(PresetError) as caught:
        apply_overrides(preset, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Defaults and the resolved result


def test_minimal_mpo_preset_gets_defaults_and_full_agent_kwargs():
    preset = preset_from_toml_text(MPO_TEXT, "presets/tiny.toml")
    assert preset.name == "tiny"
    assert preset.description == ""
    assert preset.source == "presets/tiny.toml"
    assert preset.env == presets.EnvConfig(id="Pendulum-v1")
    assert preset.train == presets.TrainConfig()
    assert preset.network.policy_layer_sizes == (256, 256)
    assert preset.agent["kl_epsilon"] == 0.1 and preset.agent["action_samples"] == 20
    assert set(preset.agent) == set(presets._AGENT_PARAMS["mpo"])
    assert preset.eval == presets.EvalConfig() and preset.checkpoint == presets.CheckpointConfig()


def test_trpo_defaults_use_small_networks():
    preset = preset_from_toml_text(TRPO_TEXT)
    assert preset.network == presets.NetworkConfig((64, 64), (64, 64))
    assert set(preset.agent) == set(presets._AGENT_PARAMS["trpo"])
    assert preset.name == "preset"  # "<text>" is not a usable run name


def test_integers_are_accepted_for_numbers_and_stored_as_floats():
    preset = preset_from_toml_text(MPO_TEXT + "[mpo]\nmax_grad_norm = 40\n[train]\nupdates_per_step = 1\n")
    assert preset.agent["max_grad_norm"] == 40.0 and isinstance(preset.agent["max_grad_norm"], float)
    assert isinstance(preset.train.updates_per_step, float)


# --------------------------------------------------------------------------------------------
# One test per validation error kind


def test_unknown_key_suggests_the_close_one():
    assert error_of(MPO_TEXT + "[mpo]\nkl_epsilonn = 0.1\n") == \
        'x.toml: [mpo] kl_epsilonn: unknown key (did you mean "kl_epsilon"?)'


def test_unknown_table_and_top_level_key():
    assert error_of(MPO_TEXT + "[trian]\nseed = 1\n") == 'x.toml: [trian]: unknown key (did you mean "train"?)'
    assert error_of('nmae = "x"\n' + MPO_TEXT) == 'x.toml: nmae: unknown key (did you mean "name"?)'
    assert error_of(MPO_TEXT.replace("[env]", "[env]\nzzz = 1")) == "x.toml: [env] zzz: unknown key"


def test_wrong_type():
    assert error_of(MPO_TEXT + '[mpo]\nkl_epsilon = "abc"\n') == \
        'x.toml: [mpo] kl_epsilon: expected a number > 0, got "abc"'
    assert error_of(MPO_TEXT.replace('id = "Pendulum-v1"', 'id = "Pendulum-v1"\nnum_envs = true')) == \
        "x.toml: [env] num_envs: expected an integer >= 1, got true"
    assert error_of(MPO_TEXT + "[train]\nbatch_size = 2.5\n") == \
        "x.toml: [train] batch_size: expected an integer >= 1, got 2.5"
    assert error_of(MPO_TEXT + '[mpo]\nuse_retrace = "yes"\n') == \
        'x.toml: [mpo] use_retrace: expected true or false, got "yes"'
    assert error_of("env = 3\n" + 'algo = "mpo"\n') == "x.toml: [env]: expected a table, got 3"


def test_out_of_range():
    assert error_of(MPO_TEXT + "[mpo]\ngamma = 1.5\n") == "x.toml: [mpo] gamma: expected a number in (0, 1], got 1.5"
    assert error_of(MPO_TEXT + "[mpo]\nepsilon_penalty = -0.1\n") == \
        "x.toml: [mpo] epsilon_penalty: expected a number >= 0, got -0.1"
    assert error_of(MPO_TEXT + "[train]\nbatch_size = 0\n") == "x.toml: [train] batch_size: expected an integer >= 1, got 0"
    assert error_of(MPO_TEXT + "[mpo]\nkl_epsilon = inf\n") == \
        "x.toml: [mpo] kl_epsilon: expected a finite number > 0, got inf"
    assert error_of(TRPO_TEXT + "[trpo]\nbacktrack_coeff = 1.0\n") == \
        "x.toml: [trpo] backtrack_coeff: expected a number in (0, 1), got 1.0"
    assert error_of(MPO_TEXT + "[checkpoint]\nkeep = 0\n") == "x.toml: [checkpoint] keep: expected an integer >= 1, got 0"


def test_string_choices_and_patterns():
    assert error_of(MPO_TEXT + '[mpo]\noptimizer_type = "adamw"\n') == \
        'x.toml: [mpo] optimizer_type: expected "adam" or "sgd", got "adamw"'
    assert error_of(MPO_TEXT + '[train]\ndevice = "gpu"\n') == \
        'x.toml: [train] device: expected "auto", "cpu", "cuda" or "cuda:N", got "gpu"'
    assert error_of('algo = "ppo"\n') == 'x.toml: algo: expected "mpo" or "trpo", got "ppo"'
    assert error_of('name = "my run"\n' + MPO_TEXT) == \
        "x.toml: name: expected a name of letters, digits, '.', '_' and '-', got \"my run\""


def test_layer_sizes():
    for bad in ("[]", "[64, 0]", "64", "[64, true]"):
        message = error_of(MPO_TEXT + f"[network]\npolicy_layer_sizes = {bad}\n")
        assert message.startswith("x.toml: [network] policy_layer_sizes: expected a non-empty array of integers >= 1, got ")


def test_missing_required_keys():
    assert error_of('[env]\nid = "Pendulum-v1"\n') == 'x.toml: algo: missing (expected "mpo" or "trpo")'
    assert error_of('algo = "mpo"\n') == \
        'x.toml: [env] id: missing (expected a Gymnasium environment id such as "Pendulum-v1")'


def test_table_that_does_not_match_algo():
    assert error_of(MPO_TEXT + "[trpo]\ngamma = 0.9\n") == \
        'x.toml: [trpo]: this table is for algo "trpo", but the preset has algo "mpo"'
    assert error_of(TRPO_TEXT + "[train]\nreplay_size = 1000\n") == \
        'x.toml: [train] replay_size: only used by algo "mpo", but the preset has algo "trpo"'
    assert error_of(MPO_TEXT.replace('id = "Pendulum-v1"', 'id = "Pendulum-v1"\nnormalize_reward = true')) == \
        'x.toml: [env] normalize_reward: only used by algo "trpo", but the preset has algo "mpo"'
    assert error_of(TRPO_TEXT + "[checkpoint]\nsave_replay = false\n") == \
        'x.toml: [checkpoint] save_replay: only used by algo "mpo", but the preset has algo "trpo"'


def test_replay_warm_up_must_cover_a_batch():
    assert error_of(MPO_TEXT + "[train]\nupdate_after = 100\n") == \
        "x.toml: [train] update_after: expected an integer >= [train] batch_size (256), got 100"
    assert error_of(MPO_TEXT + "[train]\nreplay_size = 500\n") == \
        "x.toml: [train] replay_size: expected an integer >= [train] update_after (1000), got 500"


def test_unknown_environment_id_suggests_close_ids():
    message = error_of(MPO_TEXT.replace("Pendulum-v1", "Pendulum-v2"))
    assert message.startswith('x.toml: [env] id: unknown environment "Pendulum-v2" (did you mean "Pendulum-v1"')
    assert error_of(MPO_TEXT.replace("Pendulum-v1", "Zzqx")) == 'x.toml: [env] id: unknown environment "Zzqx"'


def test_env_kwargs_reject_dates():
    message = error_of(MPO_TEXT.replace('id = "Pendulum-v1"', 'id = "Pendulum-v1"\nkwargs = {when = 1979-05-27}'))
    assert message == "x.toml: [env] kwargs.when: expected a string, number, boolean, array or table, got 1979-05-27"


def test_non_box_action_space(tmp_path):
    path = write(tmp_path / "cartpole.toml", 'algo = "mpo"\n[env]\nid = "CartPole-v1"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(path)
    assert str(caught.value) == ('cartpole.toml: [env] id: "CartPole-v1" has a Discrete action space; '
                                 "MPO and TRPO need a continuous (Box) action space")
    load_preset(path, check_env=False)  # the schema alone is fine


def test_bad_env_kwargs_fail_when_the_env_is_made(tmp_path):
    path = write(tmp_path / "k.toml", 'algo = "mpo"\n[env]\nid = "Pendulum-v1"\nkwargs = {foo = 1}\n')
    with pytest.raises(PresetError) as caught:
        load_preset(path)
    assert str(caught.value).startswith('k.toml: [env] kwargs: gymnasium.make("Pendulum-v1") failed: TypeError: ')
    assert "\n" not in str(caught.value)


def test_mujoco_id_without_mujoco_names_the_extra(monkeypatch):
    monkeypatch.setattr(presets, "_mujoco_installed", lambda: False)
    with pytest.raises(PresetError) as caught:
        load_preset("hopper-mpo")
    assert str(caught.value).endswith(
        """[env] id: "Hopper-v5" needs MuJoCo: pip install 'rltui[mujoco]'""")
    check_action_space(load_preset("pendulum-mpo", check_env=False))  # non-MuJoCo ids are unaffected


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(PresetError) as caught:
        load_preset("nowhere/x.toml")
    assert str(caught.value) == "nowhere/x.toml: no such file"
    with pytest.raises(PresetError) as caught:
        load_preset("x.toml")
    assert str(caught.value) == "x.toml: no such file"
    with pytest.raises(PresetError) as caught:
        load_preset("pendulum-mpoo")
    assert str(caught.value).startswith('no preset named "pendulum-mpoo" (did you mean "pendulum-mpo"')
    assert "; searched " in str(caught.value)


def test_toml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path / "bad.toml", 'algo = "mpo"\n[env]\nid = \n')
    with pytest.raises(PresetError) as caught:
        load_preset(path)
    message = str(caught.value)
    assert message.startswith("bad.toml: invalid TOML: ") and "line 3" in message and "\n" not in message


# --------------------------------------------------------------------------------------------
# extends


def test_extends_deep_merges_and_later_wins(tmp_path):
    write(tmp_path / "bases" / "_base.toml",
          'algo = "mpo"\ndescription = "base"\n[env]\nid = "Pendulum-v1"\nkwargs = {g = 9.81, other = 1}\n'
          "[mpo]\nkl_epsilon = 0.2\nq_lr = 1e-4\n[train]\nbatch_size = 64\nupdate_after = 64\n")
    child = write(tmp_path / "child.toml",
                  'extends = "bases/_base.toml"\nname = "child"\n[env]\nkwargs = {g = 5.0}\n'
                  "[mpo]\nq_lr = 5e-4\n[network]\npolicy_layer_sizes = [32]\n")
    preset = load_preset(child, check_env=False)  # Pendulum has no "other" argument
    assert preset.name == "child" and preset.description == "base"
    assert preset.env.kwargs == {"g": 5.0, "other": 1}
    assert preset.agent["kl_epsilon"] == 0.2 and preset.agent["q_lr"] == 5e-4
    assert preset.train.batch_size == 64 and preset.network.policy_layer_sizes == (32,)


def test_extends_list_merges_in_order(tmp_path):
    write(tmp_path / "_a.toml", 'algo = "trpo"\n[trpo]\ngamma = 0.5\ncg_iters = 3\n')
    write(tmp_path / "_b.toml", "[trpo]\ngamma = 0.7\n")
    path = write(tmp_path / "c.toml", 'extends = ["_a.toml", "_b.toml"]\n[env]\nid = "Pendulum-v1"\n')
    preset = load_preset(path, check_env=False)
    assert preset.agent["gamma"] == 0.7 and preset.agent["cg_iters"] == 3


def test_extends_cycle_names_the_chain(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "a.toml")
    assert str(caught.value) == "b.toml: extends: cycle: a.toml -> b.toml -> a.toml"
    write(tmp_path / "self.toml", 'extends = "self.toml"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "self.toml")
    assert str(caught.value) == "self.toml: extends: cycle: self.toml -> self.toml"


def test_extends_missing_base_and_errors_name_the_file_that_set_the_value(tmp_path):
    write(tmp_path / "m.toml", 'extends = "_gone.toml"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "m.toml")
    assert str(caught.value) == 'm.toml: extends: no such file "_gone.toml"'
    write(tmp_path / "_base.toml", 'algo = "mpo"\n[mpo]\nkl_epsilon = -1\n')
    write(tmp_path / "child.toml", 'extends = "_base.toml"\n[env]\nid = "Pendulum-v1"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "child.toml")
    assert str(caught.value) == "_base.toml: [mpo] kl_epsilon: expected a number > 0, got -1"
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "child.toml", ["mpo.kl_epsilon=0"])
    assert str(caught.value) == "--set mpo.kl_epsilon: [mpo] kl_epsilon: expected a number > 0, got 0"


def test_extends_must_be_paths():
    assert error_of("extends = 3\n" + MPO_TEXT) == "x.toml: extends: expected a path or an array of paths, got 3"


# --------------------------------------------------------------------------------------------
# Overrides


@pytest.fixture
def mpo_preset() -> Preset:
    return preset_from_toml_text(MPO_TEXT, "presets/p.toml")


def test_overrides_are_typed_toml_values(mpo_preset):
    preset = apply_overrides(mpo_preset, [
        "train.seed=7", "mpo.kl_epsilon=0.05", "mpo.use_retrace=true", "network.policy_layer_sizes=[64, 64]",
        "train.updates_per_step=1", "env.kwargs={g = 9.0}",
    ])
    assert preset.train.seed == 7 and preset.agent["kl_epsilon"] == 0.05 and preset.agent["use_retrace"] is True
    assert preset.network.policy_layer_sizes == (64, 64) and preset.train.updates_per_step == 1.0
    assert preset.env.kwargs == {"g": 9.0}
    assert preset.source == "presets/p.toml"
    assert mpo_preset.train.seed == 0  # the original is untouched


def test_overrides_accept_bare_strings_for_string_fields(mpo_preset):
    preset = apply_overrides(mpo_preset, ["train.device=cuda:0", "mpo.optimizer_type=sgd", "name=2024",
                                          'description="quoted text"', "env.kwargs.render_mode=rgb_array"])
    assert preset.train.device == "cuda:0" and preset.agent["optimizer_type"] == "sgd"
    assert preset.name == "2024" and preset.description == "quoted text"
    assert preset.env.kwargs == {"render_mode": "rgb_array"}
    assert apply_overrides(mpo_preset, ["env.id = Pendulum-v1"]).env.id == "Pendulum-v1"


def test_override_errors_name_the_override(mpo_preset):
    assert override_error(mpo_preset, "mpo.kl_epsilon=abc") == \
        '--set mpo.kl_epsilon: [mpo] kl_epsilon: expected a number > 0, got "abc"'
    assert override_error(mpo_preset, "mpo.kl_epsilonn=1") == \
        '--set mpo.kl_epsilonn: [mpo] kl_epsilonn: unknown key (did you mean "kl_epsilon"?)'
    assert override_error(mpo_preset, "trpo.gamma=0.9") == \
        '--set trpo.gamma: [trpo]: this table is for algo "trpo", but the preset has algo "mpo"'
    assert override_error(mpo_preset, "train.seed") == '--set train.seed: expected section.key=value, got "train.seed"'
    assert override_error(mpo_preset, "name.x=1") == '--set name.x: name: is "p", not a table'
    assert override_error(mpo_preset, "env.id=Zzqx") == '--set env.id: [env] id: unknown environment "Zzqx"'


def test_override_values_are_never_evaluated(mpo_preset):
    # A value smuggling a second TOML line stays one raw string, and nothing is ever eval'ed.
    assert override_error(mpo_preset, 'train.seed=1\nalgo = "trpo"') == \
        '--set train.seed: [train] seed: expected an integer in [0, 4294967295], got "1\\nalgo = \\"trpo\\""'
    assert override_error(mpo_preset, "train.seed=__import__('os').getpid()").startswith(
        "--set train.seed: [train] seed: expected an integer in [0, 4294967295], got ")


def test_load_preset_applies_overrides_before_validation(tmp_path):
    path = write(tmp_path / "p.toml", MPO_TEXT + "[mpo]\nkl_epsilon = -1\n")
    preset = load_preset(path, ["mpo.kl_epsilon=0.3"])  # the override fixes the file's bad value
    assert preset.agent["kl_epsilon"] == 0.3
    with pytest.raises(PresetError) as caught:
        load_preset(path, ["env.id=CartPole-v1", "mpo.kl_epsilon=0.3"])
    assert str(caught.value).startswith('--set env.id: [env] id: "CartPole-v1" has a Discrete action space')


# --------------------------------------------------------------------------------------------
# TOML round trips and the shipped presets


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_loads_and_round_trips(name):
    preset = load_preset(name)  # makes the environment once (MuJoCo ids need the extra installed)
    assert preset.name == name and preset.description
    assert preset.env.id.endswith("-v1" if name.startswith("pendulum") else "-v5")
    text = preset_to_toml(preset)
    again = preset_from_toml_text(text, "saves/run/preset.toml")
    assert again == preset
    assert preset_to_toml(again).splitlines()[1:] == text.splitlines()[1:]


def test_round_trip_of_awkward_values():
    text = MPO_TEXT.replace('id = "Pendulum-v1"', 'id = "Pendulum-v1"\nkwargs = { "odd key" = [1, 2.5e-7, -3], '
                            'nested = { flag = false, big = 1e300, s = "a\\"b\\\\c\\u0001\\u007f\\ttab é" }, empty = {} }')
    text = 'description = "line one\\nline two \\"quoted\\" ✓"\n' + text + "[mpo]\nq_lr = 1e-6\n"
    preset = preset_from_toml_text(text)
    assert preset.env.kwargs["nested"]["s"] == 'a"b\\c\x01\x7f\ttab é'
    again = preset_from_toml_text(preset_to_toml(preset))
    assert again == preset and again.env.kwargs["odd key"][1] == 2.5e-7
    assert isinstance(again.env.kwargs["odd key"][0], int)


def test_toml_writer_values():
    assert presets._toml_value(1_000_000) == "1_000_000" and presets._toml_value(-5) == "-5"
    assert presets._toml_value(3e-4) == "0.0003" and presets._toml_value(1.0) == "1.0"
    assert presets._toml_value(math.inf) == "inf"
    assert presets._toml_value({"a b": [True]}) == '{ "a b" = [true] }'


def test_bundled_folder_holds_the_presets_and_their_bases():
    names = {p.stem for p in bundled_presets_dir().glob("*.toml")}
    assert {"_mujoco-mpo", "_mujoco-trpo"} <= names and set(SHIPPED) <= names


# --------------------------------------------------------------------------------------------
# Lookup: list_presets, find_preset, load by name from any directory


def test_list_presets_from_another_directory_lists_the_bundled_ones():
    infos = {info.name: info for info in list_presets()}
    assert sorted(infos) == SHIPPED  # bases ("_*.toml") are not listed
    assert infos["pendulum-mpo"].algo == "mpo" and infos["pendulum-mpo"].env_id == "Pendulum-v1"
    assert infos["hopper-trpo"].description.startswith("TRPO on Hopper-v5")
    assert all(info.error is None and info.path.is_file() for info in infos.values())


def test_local_presets_shadow_bundled_ones_and_broken_files_are_listed(tmp_path):
    write(tmp_path / "presets" / "pendulum-mpo.toml", 'description = "mine"\n' + MPO_TEXT)
    write(tmp_path / "presets" / "broken.toml", 'algo = "nope"\n')
    infos = {info.name: info for info in list_presets()}
    assert infos["pendulum-mpo"].description == "mine"
    assert infos["broken"].error == 'presets/broken.toml: algo: expected "mpo" or "trpo", got "nope"'
    assert infos["broken"].algo == "?"
    assert find_preset("pendulum-mpo") == Path("presets/pendulum-mpo.toml").absolute()
    assert load_preset("pendulum-mpo").description == "mine"


def test_find_preset_from_another_directory():
    path = find_preset("pendulum-trpo")
    assert path == bundled_presets_dir() / "pendulum-trpo.toml"
    preset = load_preset("pendulum-trpo")
    assert preset.algo == "trpo" and preset.env.num_envs == 2 and preset.train.rollout_steps == 1024
    assert load_preset(path) == preset  # a path to any file works too


# --------------------------------------------------------------------------------------------
# Devices


def test_resolve_device(monkeypatch):
    import torch

    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(PresetError) as caught:
        resolve_device("cuda")
    assert str(caught.value) == '[train] device: "cuda" was requested but CUDA is not available; use "auto" or "cpu"'
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(PresetError) as caught:
        resolve_device("cuda:1")
    assert str(caught.value) == '[train] device: "cuda:1" was requested but there are only 1 CUDA device(s)'
    with pytest.raises(PresetError) as caught:
        resolve_device("gpu")
    assert str(caught.value) == '[train] device: expected "auto", "cpu", "cuda" or "cuda:N", got "gpu"'


# --------------------------------------------------------------------------------------------
# The schema agrees with the agents and the documentation


@pytest.mark.parametrize("algo, module, cls", [("mpo", "agents.mpo", "MPOAgent"), ("trpo", "agents.trpo", "TRPOAgent")])
def test_agent_tables_match_the_agent_signatures(algo, module, cls):
    agent_class = getattr(pytest.importorskip(module), cls)
    from_elsewhere = {"self", "obs_dim", "act_dim", "action_low", "action_high", "device",
                      "policy_layer_sizes", "critic_layer_sizes"}
    signature = {name: p.default for name, p in inspect.signature(agent_class.__init__).parameters.items()
                 if name not in from_elsewhere}
    table = presets._AGENT_PARAMS[algo]
    assert list(table) == list(signature)
    assert {name: param.default for name, param in table.items()} == signature


def test_readme_documents_every_key():
    readme = (bundled_presets_dir() / "README.md").read_text(encoding="utf-8")
    for section, params in presets._SECTIONS.items():
        assert f"[{section}]" in readme
        for key in params:
            assert f"`{key}`" in readme, f"[{section}] {key} is not documented"
    for key in ("name", "description", "algo", "extends"):
        assert f"`{key}`" in readme
    for name in SHIPPED:
        assert f"`{name}`" in readme
