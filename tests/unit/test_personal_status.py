"""What `skiff tune --status` and `skiff status` say about the personal adapter."""

from skiff.assistant.personal_adapter import PersonalStatus


def test_a_trained_adapter_switched_off_says_it_is_not_used():
    on = PersonalStatus("ready", 12, 12, "f", private_left_out=2)
    off = PersonalStatus("ready", 12, 12, "f", private_left_out=2, switched_off=True)
    assert on.describe().startswith("in use under every answer (12 steps")
    assert "2 chunk(s) of private notes left out" in on.describe()
    assert off.describe() == "trained (12 steps) but not used: personal_adapter = false"


def test_switching_off_changes_nothing_but_a_ready_adapter():
    for state in ("none", "partial", "stale"):
        assert (PersonalStatus(state, 3, 12, switched_off=True).describe()
                == PersonalStatus(state, 3, 12).describe())
