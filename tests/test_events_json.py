"""Reading events back from metrics.jsonl: every field checked by type, nothing but ValueError escapes."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from fake_engine import scripted_events

from rltui.events import (
    _FIELD_TYPES,
    EVENT_TYPES,
    EvalResult,
    Event,
    RunState,
    UnknownEventKind,
    UpdateMetrics,
)
from rltui.runlog import RunLogWriter, event_to_line, parse_event_line, read_events

EPISODE = {"event": "episode", "step": 10, "time": 1.5, "episode_return": -3.0, "episode_length": 200}
UPDATE = {"event": "update", "step": 10, "time": 1.5, "updates": 4, "metrics": {"loss/q": 1.0}}
EVAL = {"event": "eval", "step": 10, "time": 1.5, "return_mean": -1.0, "return_std": 0.5, "length_mean": 200.0,
        "episodes": 2, "returns": [-1.5, -0.5], "deterministic": True}
STARTED = {"event": "run_started", "step": 0, "time": 1.0, "name": "r", "algo": "mpo", "env_id": "Pendulum-v1",
           "device": "cpu", "total_steps": 1000, "run_dir": "saves/r", "resumed": False}


def with_(base: dict, **changes) -> dict:
    return {**base, **changes}


def test_every_declared_field_type_has_a_checker():
    for cls in EVENT_TYPES.values():
        for f in dataclasses.fields(cls):
            assert str(f.type) in _FIELD_TYPES, (cls.kind, f.name, f.type)


def test_round_trip_of_every_kind():
    events = scripted_events("mpo", steps=4200) + scripted_events("trpo", steps=200)
    for event in events:
        assert Event.from_json(json.loads(event_to_line(event))) == event
    kinds = {type(e).kind for e in events}
    assert {"run_started", "state", "episode", "update", "eval", "checkpoint", "warning"} <= kinds


def test_null_floats_read_back_as_nan_and_keep_their_type():
    """The writer writes NaN/inf as null: a diverged run's log is normal and must load as floats."""
    update = Event.from_json(with_(UPDATE, metrics={"loss/q": None, "kl/mean": 2}))
    assert isinstance(update, UpdateMetrics)
    assert math.isnan(update.metrics["loss/q"]) and update.metrics["kl/mean"] == 2.0
    assert all(type(v) is float for v in update.metrics.values())
    evaluated = Event.from_json(with_(EVAL, return_mean=None, return_std=None, returns=[None, 3]))
    assert isinstance(evaluated, EvalResult)
    assert math.isnan(evaluated.return_mean) and math.isnan(evaluated.return_std)
    assert math.isnan(evaluated.returns[0]) and evaluated.returns[1] == 3.0 and type(evaluated.returns[1]) is float
    assert math.isnan(Event.from_json(with_(EPISODE, time=None)).time)
    # what the writer itself produces from non-finite values
    line = event_to_line(EvalResult(5, return_mean=math.inf, return_std=math.nan, length_mean=1.0, episodes=1,
                                    returns=(-math.inf,)))
    assert math.isnan(parse_event_line(line.encode().rstrip(b"\n")).return_mean)


def test_unknown_fields_are_ignored_and_optional_ones_default():
    event = Event.from_json(with_(EVAL, future_field=[1, 2]) | {"returns": [], "deterministic": False})
    assert event.returns == () and event.deterministic is False
    state = Event.from_json({"event": "state", "step": 1, "time": 2.0, "state": "paused"})
    assert state.state is RunState.PAUSED and state.message == ""


@pytest.mark.parametrize(
    "payload, message",
    [
        (with_(EPISODE, step="abc"), "episode event: 'step' must be an integer in [0, 9223372036854775807], got 'abc'"),
        (with_(EPISODE, step=True), "'step' must be an integer"),
        (with_(EPISODE, step=-1), "'step' must be an integer"),
        (with_(EPISODE, step=2**63), "'step' must be an integer"),
        (with_(EPISODE, step=12.0), "'step' must be an integer"),
        (with_(EPISODE, step=None), "'step' must be an integer"),
        (with_(EPISODE, episode_return="-3"), "'episode_return' must be a number or null, got '-3'"),
        (with_(EPISODE, episode_return=[1]), "'episode_return' must be a number or null, got an array"),
        (with_(EPISODE, episode_return=10**400), "'episode_return' must be a number or null"),
        (with_(EPISODE, time="now"), "'time' must be a number or null"),
        (with_(UPDATE, metrics=[1, 2]), "update event: 'metrics' must be an object of numbers or nulls, got an array"),
        (with_(UPDATE, metrics={"loss/q": "high"}), "'metrics' must be an object of numbers or nulls"),
        (with_(UPDATE, metrics={"loss/q": {"x": 1}}), "'metrics' must be an object of numbers or nulls"),
        (with_(UPDATE, metrics=None), "'metrics' must be an object"),
        (with_(EVAL, returns=5), "eval event: 'returns' must be an array of numbers or nulls, got 5"),
        (with_(EVAL, returns=["a"]), "'returns' must be an array of numbers or nulls"),
        (with_(EVAL, deterministic="yes"), "'deterministic' must be true or false"),
        (with_(EVAL, episodes=2.5), "'episodes' must be an integer"),
        (with_(STARTED, name=5), "run_started event: 'name' must be a string, got 5"),
        (with_(STARTED, resumed=1), "'resumed' must be true or false"),
        ({"event": "state", "step": 1, "time": 1.0, "state": "exploded"}, "'state' must be one of 'starting'"),
        ({"event": "state", "step": 1, "time": 1.0, "state": 3}, "'state' must be one of"),
        ({"event": "checkpoint", "step": 1, "time": 1.0, "path": None}, "'path' must be a string, got null"),
        ({"event": "warning", "step": 1, "time": 1.0}, "warning event: missing field 'message'"),
        ({"event": "episode", "time": 1.0}, "missing field 'step'"),
        ({"step": 1}, "'event' must be a string naming the kind, got null"),
        ({"event": ["update"]}, "'event' must be a string naming the kind, got an array"),
        ({"event": {"a": 1}}, "'event' must be a string"),
        ([1, 2], "expected a JSON object, got an array"),
        ("update", "expected a JSON object, got a string"),
        (None, "expected a JSON object, got null"),
        (5, "expected a JSON object, got a number"),
    ],
)
def test_fields_of_the_wrong_type_are_refused_with_a_reason(payload, message):
    with pytest.raises(ValueError) as info:
        Event.from_json(payload)
    assert message in str(info.value)
    assert not isinstance(info.value, UnknownEventKind)


def test_unknown_kind_is_its_own_value_error():
    with pytest.raises(UnknownEventKind, match="unknown event kind 'gradient_norms'"):
        Event.from_json({"event": "gradient_norms", "step": 1})
    assert issubclass(UnknownEventKind, ValueError)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not json", "not JSON (Expecting value at column 1)"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ('{"event": "warning", "message": "caf\u00e9"}'.encode("latin-1"), "not UTF-8 text"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"event": "episode", "step": ' + b"9" * 5000 + b"}", "not usable JSON"),
        (b'{"event": "episode", "step": 1, "episode_return": NaN', "not JSON"),
        (b"\x00\x01\x02", "not JSON"),
        (b'"just a string"', "expected a JSON object"),
    ],
)
def test_parse_event_line_raises_only_value_error(raw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_event_line(raw)


def test_read_events_skips_every_kind_of_bad_line_and_says_why(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = RunLogWriter(path)
    good = [e for e in scripted_events("mpo", steps=400) if e.kind in ("run_started", "episode", "update")][:4]
    writer(good[0])
    writer.close()
    bad_lines = [
        json.dumps(with_(EPISODE, step="abc")).encode(),
        json.dumps(with_(UPDATE, metrics=[1, 2])).encode(),
        json.dumps(with_(EVAL, returns=5)).encode(),
        json.dumps({"event": "gradient_norms", "step": 3}).encode(),
        b"\x89PNG\r\n\x1a",  # two lines of garbage
        b"\xc3\x28 not utf-8",
        b"[" * 50_000,
        b'{"event": "warning", "step": 1, "time": 1.0, "message": "' + b"x" * (10 << 20) + b'"}',  # 10 MB, valid
    ]
    with path.open("ab") as f:
        for raw in bad_lines:
            f.write(raw + b"\n")
        for event in good[1:]:
            f.write(event_to_line(event).encode())
        f.write(json.dumps(with_(UPDATE, metrics={"loss/q": None})).encode() + b"\n")
        f.write(b'{"event": "episode", "step": 9')  # cut short
    errors: list[tuple[int, str]] = []
    events, offset = read_events(path, errors=errors)
    kinds = [e.kind for e in events]
    assert kinds == ["run_started", "warning", *[e.kind for e in good[1:]], "update"]
    assert len(events[1].message) == 10 << 20
    assert math.isnan(events[-1].metrics["loss/q"])
    reasons = [reason for _, reason in errors]
    assert len(reasons) == 8 and "'step' must be an integer" in reasons[0] and "unknown event kind" in reasons[3]
    assert offset == path.stat().st_size - len(b'{"event": "episode", "step": 9')
    data = path.read_bytes()
    assert all(data[start - 1 : start] == b"\n" for start, _ in errors)  # offsets point at line starts


def test_run_started_carries_the_agent_settings_and_reads_old_lines_without_them():
    from rltui.events import Event, RunStarted

    event = RunStarted(0, name="n", algo="mpo", env_id="Pendulum-v1", device="cpu", total_steps=10, run_dir="r",
                       agent_settings={"kl_epsilon": 0.1, "use_retrace": False, "optimizer_type": "adam", "m_steps": 1})
    assert Event.from_json(event.to_json()) == event
    old = {k: v for k, v in event.to_json().items() if k != "agent_settings"}
    assert Event.from_json(old).agent_settings == {}
    with pytest.raises(ValueError, match="'agent_settings' must be an object of numbers, booleans or strings"):
        Event.from_json({**event.to_json(), "agent_settings": {"x": [1]}})
