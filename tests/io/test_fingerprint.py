"""Run fingerprints: what differs is named, settings added later at None and
report-only settings do not block a resume."""

import pytest

from entroprune.io.fingerprint import FingerprintMismatch, check_fingerprint, differences


def test_differences_name_each_changed_setting():
    stored = {"config": {"lr": 0.1, "epochs": 10}, "seed": 0}
    current = {"config": {"lr": 0.01, "epochs": 10}, "seed": 0, "new_option": None}
    assert differences(stored, current) == ["config.lr: 0.1 there, 0.01 here"]


def test_mismatch_message_names_the_setting():
    with pytest.raises(FingerprintMismatch, match=r"config\.lr: 0\.1 there, 0\.01 here"):
        check_fingerprint({"config": {"lr": 0.1}}, {"config": {"lr": 0.01}}, "run folder x")


def test_ignored_keys_do_not_block_but_others_still_do():
    stored = {"config": {"lr": 0.1}}
    check_fingerprint(stored, {"config": {"lr": 0.1, "eval_stages": True}}, "x", ignore=("config.eval_stages",))
    with pytest.raises(FingerprintMismatch, match="config.lr"):
        check_fingerprint(stored, {"config": {"lr": 0.2, "eval_stages": True}}, "x",
                          ignore=("config.eval_stages",))


def test_missing_fingerprint_is_an_older_run():
    with pytest.raises(FingerprintMismatch, match="older entroprune"):
        check_fingerprint(None, {"a": 1}, "x")
