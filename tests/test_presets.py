"""Presets: schema validation (one test per error kind), extends, overrides, TOML round trips,
the shipped presets, lookup from any directory and device resolution."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import tomli_w

from rltui import envs, presets
from rltui.presets import (
    MPOConfig,
    Preset,
    PresetError,
    TRPOConfig,
    apply_overrides,
    bundled_presets_dir,
    check_environment,
    find_preset,
    list_presets,
    load_preset,
    preset_from_toml_text,
    preset_to_toml,
    resolve_device,
)

SHIPPED = ["halfcheetah-mpo", "halfcheetah-trpo", "hopper-mpo", "hopper-trpo", "pendulum-mpo", "pendulum-mpo-quick",
           "pendulum-trpo", "pendulum-trpo-quick", "walker2d-mpo", "walker2d-trpo"]

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
    assert list(preset.agent) == [f.name for f in dataclasses.fields(MPOConfig)]
    assert preset.eval == presets.EvalConfig() and preset.checkpoint == presets.CheckpointConfig()


def test_trpo_defaults_use_small_networks():
    preset = preset_from_toml_text(TRPO_TEXT)
    assert preset.network == presets.NetworkConfig((64, 64), (64, 64))
    assert list(preset.agent) == [f.name for f in dataclasses.fields(TRPOConfig)]
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


def test_retrace_windows_longer_than_the_replay_are_refused():
    text = 'algo = "mpo"\n[env]\nid = "Pendulum-v1"\nnum_envs = 4\n[train]\nreplay_size = 1000\n' \
           'update_after = 300\n[mpo]\nuse_retrace = true\nretrace_steps = 251\n'
    assert error_of(text) == ("x.toml: [mpo] retrace_steps: expected an integer <= the replay's 250 steps per "
                              "environment ([train] replay_size 1000 / [env] num_envs 4), got 251")
    assert preset_from_toml_text(text.replace("251", "250")).agent["retrace_steps"] == 250
    assert preset_from_toml_text(text.replace("use_retrace = true", "use_retrace = false")).algo == "mpo"


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
    assert str(caught.value).startswith('k.toml: [env] kwargs.foo: gymnasium.make("Pendulum-v1") failed: TypeError: ')
    assert "\n" not in str(caught.value)


def test_mujoco_id_without_mujoco_names_the_extra(monkeypatch):
    real_find_spec = envs.importlib.util.find_spec
    monkeypatch.setattr(envs.importlib.util, "find_spec", lambda name: None if name == "mujoco" else real_find_spec(name))
    with pytest.raises(PresetError) as caught:
        load_preset("hopper-mpo")
    assert str(caught.value).endswith(
        """[env] id: "Hopper-v5" needs MuJoCo: install the mujoco extra (pip install 'rltui[mujoco]')""")
    check_environment(load_preset("pendulum-mpo", check_env=False))  # non-MuJoCo ids are unaffected


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
    assert str(caught.value) == 'm.toml: extends: no such file "_gone.toml" and no preset named "_gone.toml"'
    write(tmp_path / "_base.toml", 'algo = "mpo"\n[mpo]\nkl_epsilon = -1\n')
    write(tmp_path / "child.toml", 'extends = "_base.toml"\n[env]\nid = "Pendulum-v1"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "child.toml")
    assert str(caught.value) == "_base.toml: [mpo] kl_epsilon: expected a number > 0, got -1"
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "child.toml", ["mpo.kl_epsilon=0"])
    assert str(caught.value) == "--set mpo.kl_epsilon: [mpo] kl_epsilon: expected a number > 0, got 0"


def test_extends_names_a_bundled_preset_from_a_file_anywhere(tmp_path, monkeypatch):
    from rltui.presets import bundled_presets_dir

    elsewhere = tmp_path / "my" / "work"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # no ./presets here: the names resolve to the bundled presets
    write(elsewhere / "mine.toml", 'extends = "pendulum-mpo"\nname = "mine"\n[train]\ntotal_steps = 3000\n')
    mine = load_preset(elsewhere / "mine.toml")
    bundled = load_preset(bundled_presets_dir() / "pendulum-mpo.toml")
    assert (mine.name, mine.train.total_steps) == ("mine", 3000)
    assert (mine.agent, mine.network, mine.env) == (bundled.agent, bundled.network, bundled.env)
    write(elsewhere / "hop.toml", 'extends = "_mujoco-mpo.toml"\n[env]\nid = "Hopper-v5"\n')
    assert load_preset(elsewhere / "hop.toml").algo == "mpo"
    # a file next to the preset wins over a preset of the same name
    write(elsewhere / "pendulum-mpo", 'algo = "trpo"\n')
    write(elsewhere / "local.toml", 'extends = "pendulum-mpo"\n[env]\nid = "Pendulum-v1"\n')
    assert load_preset(elsewhere / "local.toml").algo == "trpo"
    write(elsewhere / "nope.toml", 'extends = "pendulum-mop"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(elsewhere / "nope.toml")
    assert str(caught.value) == ('my/work/nope.toml: extends: no such file "my/work/pendulum-mop" and no preset '
                                 'named "pendulum-mop"')


def test_a_key_written_outside_its_table_names_the_table():
    assert error_of("total_steps = 5\n" + MPO_TEXT) == \
        'x.toml: total_steps: unknown key (did you mean "train.total_steps"?)'
    assert error_of(MPO_TEXT + "[mpo]\ntotal_steps = 5\n") == \
        'x.toml: [mpo] total_steps: unknown key (did you mean "train.total_steps"?)'
    assert error_of(MPO_TEXT + "[train]\npolicy_lr = 5\n") == \
        'x.toml: [train] policy_lr: unknown key (did you mean "mpo.policy_lr"?)'


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
    assert override_error(mpo_preset, "total_steps=10") == \
        '--set total_steps: total_steps: unknown key (did you mean "train.total_steps"?)'
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


def test_resolved_toml_is_written_by_tomli_w_with_a_header(mpo_preset):
    text = preset_to_toml(mpo_preset)
    assert text.splitlines()[0] == "# Resolved rltui preset (from presets/p.toml)."
    assert text.splitlines()[1:] == tomli_w.dumps(presets._preset_to_raw(mpo_preset)).splitlines()


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


@pytest.mark.parametrize("config, module, cls", [(MPOConfig, "agents.mpo", "MPOAgent"),
                                                (TRPOConfig, "agents.trpo", "TRPOAgent")])
def test_agent_tables_match_the_agent_signatures(config, module, cls):
    agent_class = getattr(pytest.importorskip(module), cls)
    from_elsewhere = {"self", "obs_dim", "act_dim", "action_low", "action_high", "device",
                      "policy_layer_sizes", "critic_layer_sizes"}
    signature = {name: p.default for name, p in inspect.signature(agent_class.__init__).parameters.items()
                 if name not in from_elsewhere}
    declared = {f.name: f.default for f in dataclasses.fields(config)}
    assert list(declared) == list(signature)
    assert declared == signature


def test_readme_schema_tables_are_generated_from_the_declarations():
    readme = (bundled_presets_dir() / "README.md").read_text(encoding="utf-8")
    assert presets.readme_with_schema(readme) == readme, (
        f"presets/README.md's schema tables are stale; regenerate them with `{presets.UPDATE_README_COMMAND}`")


def test_readme_names_every_shipped_preset():
    readme = (bundled_presets_dir() / "README.md").read_text(encoding="utf-8")
    for name in SHIPPED:
        assert f"`{name}`" in readme


# --------------------------------------------------------------------------------------------
# Upper bounds: absurd values stop at validation, before anything is allocated

BIG = 10**20
CAPPED = [  # (base text, section, key, message for BIG)
    (MPO_TEXT, "env", "num_envs", "expected an integer in [1, 1024]"),
    (MPO_TEXT, "train", "total_steps", "expected an integer in [1, 1000000000000]"),
    (MPO_TEXT, "train", "threads", "expected an integer in [1, 1024]"),
    (MPO_TEXT, "train", "replay_size", "expected an integer in [1, 1000000000]"),
    (MPO_TEXT, "train", "update_after", "expected an integer in [1, 1000000000]"),
    (MPO_TEXT, "train", "batch_size", "expected an integer in [1, 1048576]"),
    (MPO_TEXT, "train", "updates_per_step", "expected a number in (0, 1000]"),
    (TRPO_TEXT, "train", "rollout_steps", "expected an integer in [1, 1048576]"),
    (MPO_TEXT, "mpo", "action_samples", "expected an integer in [1, 4096]"),
    (MPO_TEXT, "mpo", "retrace_steps", "expected an integer in [1, 1024]"),
    (MPO_TEXT, "mpo", "retrace_mc_actions", "expected an integer in [1, 4096]"),
    (MPO_TEXT, "mpo", "m_steps", "expected an integer in [1, 1000]"),
    (TRPO_TEXT, "trpo", "cg_iters", "expected an integer in [1, 1000]"),
    (TRPO_TEXT, "trpo", "backtrack_iters", "expected an integer in [1, 1000]"),
    (TRPO_TEXT, "trpo", "value_epochs", "expected an integer in [1, 1000]"),
    (TRPO_TEXT, "trpo", "value_minibatch_size", "expected an integer in [1, 1048576]"),
    (MPO_TEXT, "eval", "episodes", "expected an integer in [1, 10000]"),
]


@pytest.mark.parametrize("text, section, key, message", CAPPED, ids=[f"{s}.{k}" for _, s, k, _ in CAPPED])
def test_absurdly_large_values_are_refused_with_the_cap(text, section, key, message):
    base = preset_from_toml_text(text)
    assert override_error(base, f"{section}.{key}={BIG}") == \
        f"--set {section}.{key}: [{section}] {key}: {message}, got {BIG}"
    cap = int(message.rsplit(", ", 1)[1].rstrip("]"))
    room = {"replay_size": ["train.update_after=1000000000"],  # keep update_after <= replay_size
            "update_after": ["train.replay_size=1000000000"], "batch_size": ["train.update_after=1048576", "train.replay_size=1048576"]}
    preset = apply_overrides(base, [*room.get(key, []), f"{section}.{key}={cap}"])  # the cap itself is allowed
    assert (preset.agent[key] if section in ("mpo", "trpo") else getattr(getattr(preset, section), key)) == cap
    assert override_error(base, f"{section}.{key}=0").startswith(f"--set {section}.{key}: [{section}] {key}: expected ")


def test_layer_sizes_are_capped_in_size_count_and_weights(mpo_preset):
    apply_overrides(mpo_preset, ["network.policy_layer_sizes=[65536]", "network.critic_layer_sizes=[1]"])
    limits = "expected a non-empty array of at most 64 integers in [1, 65536]"
    assert override_error(mpo_preset, "network.policy_layer_sizes=[65537]") == \
        f"--set network.policy_layer_sizes: [network] policy_layer_sizes: {limits}, got [65537]"
    assert override_error(mpo_preset, f"network.critic_layer_sizes=[{', '.join(['1'] * 65)}]").startswith(
        f"--set network.critic_layer_sizes: [network] critic_layer_sizes: {limits}, got [1, 1, 1")
    assert override_error(mpo_preset, "network.policy_layer_sizes=[65536, 65536]") == (
        "--set network.policy_layer_sizes: [network] policy_layer_sizes: expected at most 100000000 weights "
        "between hidden layers, got [65536, 65536] (4294967296 weights)")
    assert override_error(mpo_preset, f"network.policy_layer_sizes=[{BIG}]").endswith(f"got [{BIG}]")


def test_numbers_too_large_for_a_float_are_refused(mpo_preset):
    assert override_error(mpo_preset, f"mpo.policy_lr={10**400}") == \
        f"--set mpo.policy_lr: [mpo] policy_lr: expected a finite number > 0, got {str(10**400)[:59]}…"
    assert error_of(MPO_TEXT + f"[mpo]\nq_lr = {'9' * 5000}\n").startswith(
        "x.toml: invalid TOML: Exceeds the limit (4300 digits) for integer string conversion")


def test_the_largest_seed_works_with_every_rng_and_every_seed_offset():
    import numpy as np
    import torch

    from rltui.engine.shell import RESUME_SEED_OFFSET, STREAM_FIRST_INDEX
    from rltui.envs import TrainingEnvs, eval_seeds, make_env

    preset = apply_overrides(preset_from_toml_text(MPO_TEXT), ["train.seed=4294967295", "env.num_envs=3"])
    seed, largest_step = preset.train.seed, 10**12  # the cap on total_steps
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    np.random.default_rng(seed)
    envs_ = TrainingEnvs(preset.env, seed)
    envs_.reset()
    envs_.reset(seed=seed + RESUME_SEED_OFFSET + largest_step)
    envs_.close()
    eval_env = make_env(preset.env)
    for eval_seed in eval_seeds(seed, STREAM_FIRST_INDEX + 10**6, 2):
        eval_env.reset(seed=eval_seed)
    eval_env.close()


# --------------------------------------------------------------------------------------------
# The machine: replay memory, device


def test_a_replay_buffer_larger_than_memory_is_refused(tmp_path, monkeypatch):
    from rltui.replay import replay_bytes

    path = write(tmp_path / "big.toml", MPO_TEXT + "[train]\nreplay_size = 2_000_000\n")
    needed = replay_bytes(2_000_000, 1, 3, 1)
    monkeypatch.setattr(presets, "physical_memory_bytes", lambda: needed - 1)
    with pytest.raises(PresetError) as caught:
        load_preset(path)
    assert str(caught.value) == (
        f"big.toml: [train] replay_size: 2000000 transitions of Pendulum-v1 need {needed} bytes (0.1 GiB) of "
        f"memory; this machine has {needed - 1} bytes (0.1 GiB)")
    with pytest.raises(PresetError) as caught:
        load_preset(path, ["train.replay_size=3000000"])
    assert str(caught.value).startswith("--set train.replay_size: [train] replay_size: 3000000 transitions")
    monkeypatch.setattr(presets, "physical_memory_bytes", lambda: needed)
    load_preset(path)
    monkeypatch.setattr(presets, "physical_memory_bytes", lambda: None)  # unknown: only the cap applies
    load_preset(path, ["train.replay_size=1000000000", "train.update_after=1000000000"])
    load_preset(path, check_env=False, overrides=["train.replay_size=1000000000"])  # no env, no memory check


def test_physical_memory_is_known_here():
    memory = presets.physical_memory_bytes()
    assert memory is None or memory > 2**20


def test_flags_name_themselves_and_the_device_is_checked_at_load(tmp_path, monkeypatch):
    import torch

    path = write(tmp_path / "p.toml", MPO_TEXT)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = presets.Override("--device", ("train", "device"), "cuda:7")
    with pytest.raises(PresetError) as caught:
        load_preset(path, [device], check_device=True)
    assert str(caught.value) == \
        '--device: [train] device: "cuda:7" was requested but CUDA is not available; use "auto" or "cpu"'
    assert load_preset(path, [device]).train.device == "cuda:7"  # only checked when asked
    write(tmp_path / "gpu.toml", MPO_TEXT + '[train]\ndevice = "cuda"\n')
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "gpu.toml", check_device=True)
    assert str(caught.value).startswith('gpu.toml: [train] device: "cuda" was requested')
    with pytest.raises(PresetError) as caught:
        load_preset(path, [presets.Override("--seed", ("train", "seed"), 2**32)])
    assert str(caught.value) == "--seed: [train] seed: expected an integer in [0, 4294967295], got 4294967296"
    with pytest.raises(PresetError) as caught:
        load_preset(path, [presets.Override("--device", ("train", "device"), "gpu")])
    assert str(caught.value) == '--device: [train] device: expected "auto", "cpu", "cuda" or "cuda:N", got "gpu"'


def test_env_kwargs_errors_name_the_override_that_set_the_kwarg(tmp_path):
    path = write(tmp_path / "k.toml", MPO_TEXT.replace('id = "Pendulum-v1"', 'id = "Pendulum-v1"\nkwargs = {g = 9.0}'))
    with pytest.raises(PresetError) as caught:
        load_preset(path, ["env.kwargs.x=1"])
    assert str(caught.value) == ('--set env.kwargs.x: [env] kwargs.x: gymnasium.make("Pendulum-v1") failed: '
                                 "TypeError: PendulumEnv.__init__() got an unexpected keyword argument 'x'")
    assert load_preset(path, ["env.kwargs.g=5.0"]).env.kwargs == {"g": 5.0}


def test_provenance_survives_apply_overrides(tmp_path):
    write(tmp_path / "_base.toml", 'algo = "mpo"\n[train]\nthreads = 2\n')
    preset = load_preset(write(tmp_path / "c.toml", 'extends = "_base.toml"\n[env]\nid = "Pendulum-v1"\n'),
                         check_env=False)
    assert preset.origin_of("train", "threads") == "_base.toml" and preset.origin_of("env", "id") == "c.toml"
    assert override_error(preset, "train.threads=0") == "--set train.threads: [train] threads: expected an integer >= 1, got 0"
    again = apply_overrides(preset, ["train.seed=1"])
    assert again.origin_of("train", "threads") == "_base.toml" and again.origin_of("train", "seed") == "--set train.seed"


# --------------------------------------------------------------------------------------------
# Nesting, extends and odd command lines: one clean error, never a RecursionError


def test_extends_diamond_lattice_reads_each_file_once_in_linear_time(tmp_path, monkeypatch):
    import time

    write(tmp_path / "level-0.toml", MPO_TEXT + "[train]\nseed = 0\n")
    for level in range(1, 31):  # each level names the one below twice: 2**30 paths to level-0
        write(tmp_path / f"level-{level}.toml",
              f'extends = ["level-{level - 1}.toml", "level-{level - 1}.toml"]\n[train]\nseed = {level}\n')
    load_preset(tmp_path / "level-1.toml", check_env=False)  # imports done before timing
    reads: list[Path] = []
    real_read = presets._read_text
    monkeypatch.setattr(presets, "_read_text", lambda path, origin: reads.append(path) or real_read(path, origin))
    started = time.perf_counter()
    preset = load_preset(tmp_path / "level-30.toml", check_env=False)
    assert time.perf_counter() - started < 0.5
    assert preset.train.seed == 30 and preset.origin_of("train", "seed") == "level-30.toml"
    assert len(reads) == len(set(reads)) == 31


def test_extends_chains_are_bounded(tmp_path):
    for index in range(40):
        write(tmp_path / f"chain-{index}.toml", f'extends = "chain-{index + 1}.toml"\n')
    write(tmp_path / "chain-40.toml", MPO_TEXT)
    assert load_preset(tmp_path / "chain-9.toml", check_env=False).algo == "mpo"  # 32 files
    with pytest.raises(PresetError) as caught:
        load_preset(tmp_path / "chain-8.toml", check_env=False)  # 33 files
    assert str(caught.value) == "chain-39.toml: extends: a chain of bases longer than 32 files (from chain-8.toml)"


@pytest.mark.parametrize("text, where", [
    ("a = " + "[" * 100_000 + "]" * 100_000 + "\n" + MPO_TEXT, ""),
    ("a = " + "{b = " * 100_000 + "1" + "}" * 100_000 + "\n" + MPO_TEXT, ""),
    # (tomllib's time grows with the square of a header's length: 10k keys, not 100k, keep it quick)
    (MPO_TEXT + "[env.kwargs." + ".".join(["a"] * 10_000) + "]\nb = 1\n", "[env] kwargs.a: "),
    (MPO_TEXT.replace('id = "Pendulum-v1"', 'id = "Pendulum-v1"\nkwargs = ' + "{a = " * 40 + "1" + "}" * 40),
     "[env] kwargs.a: "),
], ids=["arrays", "inline-tables", "table-headers", "kwargs"])
def test_deeply_nested_files_are_one_clean_error(text, where):
    message = error_of(text)
    assert message.startswith("x.toml: ") and "tables and arrays nested more than 32 levels deep" in message
    assert f"x.toml: {where}" in message


def test_deeply_nested_overrides_are_one_clean_error(mpo_preset):
    deep_value = "[" * 100_000 + "]" * 100_000
    assert override_error(mpo_preset, f"env.kwargs.x={deep_value}") == \
        "--set env.kwargs.x: [env] kwargs.x: tables and arrays nested more than 32 levels deep"
    assert override_error(mpo_preset, "env.kwargs.x=" + "[" * 31 + "]" * 31) == \
        "--set env.kwargs.x: [env] kwargs.x: tables and arrays nested more than 32 levels deep"
    apply_overrides(mpo_preset, ["env.kwargs.x=" + "[" * 30 + "]" * 30])  # 2 + 30 levels is fine
    message = override_error(mpo_preset, "env.kwargs." + ".".join(["a"] * 100_000) + "=1")
    assert message.endswith(": expected a key at most 32 levels deep, got 100002 levels") and len(message) < 200
    # a string key takes even that as text
    assert apply_overrides(mpo_preset, [f"description={deep_value}"]).description == deep_value


def test_non_utf8_overrides_name_the_flag(mpo_preset):
    import os

    assert override_error(mpo_preset, os.fsdecode(b"train.name=\xff")) == \
        "--set train.name: not UTF-8 text (the command line held bytes that are not UTF-8)"
    assert override_error(mpo_preset, os.fsdecode(b"description=caf\xe9")).startswith("--set description: not UTF-8")
    assert override_error(mpo_preset, os.fsdecode(b"env.\xff=1")) == \
        "--set env.\\udcff: not UTF-8 text (the command line held bytes that are not UTF-8)"


# --------------------------------------------------------------------------------------------
# Bases for extends, and what the picker shows


@pytest.mark.parametrize("base", ["_mujoco-mpo.toml", "_mujoco-trpo.toml"])
def test_shipped_bases_check_as_partial_presets(base):
    presets.check_base_file(bundled_presets_dir() / base)


def test_a_base_is_checked_for_the_keys_it_sets(tmp_path):
    presets.check_base_file(write(tmp_path / "_ok.toml", "[mpo]\nkl_epsilon = 0.2\n[trpo]\ncg_iters = 5\n"))
    with pytest.raises(PresetError) as caught:
        presets.check_base_file(write(tmp_path / "_bad.toml", 'algo = "trpo"\n[train]\nthreads = 0\n'))
    assert str(caught.value) == "_bad.toml: [train] threads: expected an integer >= 1, got 0"
    with pytest.raises(PresetError) as caught:
        presets.check_base_file(write(tmp_path / "_mixed.toml", 'algo = "trpo"\n[mpo]\ngamma = 0.9\n'))
    assert str(caught.value) == '_mixed.toml: [mpo]: this table is for algo "mpo", but the preset has algo "trpo"'


def test_lambda_init_stays_a_key_but_is_not_shown_as_a_setting_in_effect():
    preset = preset_from_toml_text(MPO_TEXT + "[mpo]\nlambda_init = 1.0\n")
    assert preset.agent["lambda_init"] == 1.0
    shown = presets.agent_settings_in_effect(preset)
    assert "lambda_init" not in shown and set(shown) == set(preset.agent) - {"lambda_init"}
