"""Appraisal policy: trustee's default result for sample, sim by launch digest/svn/debug, expiry."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.attestation.kbs.attestation.appraisal import (
    appraise,
    default_policy_text,
    parse_policy,
    status_of,
    tier,
)
from adapters.attestation.kbs.errors import PolicyInvalid

POLICY = parse_policy(default_policy_text())
SAMPLE_CLAIMS = {
    "svn": "1",
    "launch_digest": "abcde",
    "platform_version": {"major": 1, "minor": 4},
    "debug": False,
}
SAMPLE_RVS: dict[str, Any] = {
    "launch_digest": ["abcde"],
    "svn": ["1"],
    "major_version": 1,
    "minimum_minor_version": 4,
}


def test_sample_with_trustee_reference_values_is_affirming() -> None:
    vector = appraise(POLICY, "sample", SAMPLE_CLAIMS, SAMPLE_RVS.get)
    assert vector == {
        "instance-identity": 0,
        "configuration": 2,
        "executables": 3,
        "file-system": 0,
        "hardware": 2,
        "runtime-opaque": 0,
        "storage-opaque": 0,
        "sourced-data": 0,
    }
    assert status_of(vector) == "affirming"


def test_sample_without_reference_values_is_contraindicated() -> None:
    vector = appraise(POLICY, "sample", SAMPLE_CLAIMS, {}.get)
    assert (vector["executables"], vector["hardware"], vector["configuration"]) == (33, 97, 2)
    assert status_of(vector) == "contraindicated"


@pytest.mark.parametrize(
    "rv_change",
    [
        {"minimum_minor_version": 5},
        {"major_version": 2},
        {"svn": ["2"]},
        {"svn": [1]},
        {"major_version": "1"},
    ],
)
def test_sample_hardware_mismatch(rv_change: dict[str, Any]) -> None:
    vector = appraise(POLICY, "sample", SAMPLE_CLAIMS, {**SAMPLE_RVS, **rv_change}.get)
    assert vector["hardware"] == 97


def test_sim_rules() -> None:
    claims = {"launch_digest": "ab" * 48, "svn": 3, "debug": False, "platform_id": "x"}
    ok = appraise(POLICY, "sim", claims, {"sim.launch_digest": ["ab" * 48], "sim.minimum_svn": 2}.get)
    assert status_of(ok) == "affirming"
    old = appraise(POLICY, "sim", claims, {"sim.launch_digest": ["ab" * 48], "sim.minimum_svn": 4}.get)
    assert old["hardware"] == 97
    debug = appraise(
        POLICY, "sim", {**claims, "debug": True}, {"sim.launch_digest": ["ab" * 48], "sim.svn": [3]}.get
    )
    assert debug["configuration"] == 36 and status_of(debug) == "warning"
    unknown = appraise(POLICY, "sim", claims, {"sim.svn": [3]}.get)
    assert unknown["executables"] == 33


def test_unknown_tee_is_contraindicated() -> None:
    assert status_of(appraise(POLICY, "tdx", {}, {}.get)) == "contraindicated"


@pytest.mark.parametrize(
    "value,expected",
    [
        (0, "none"),
        (1, "none"),
        (-1, "none"),
        (2, "affirming"),
        (31, "affirming"),
        (32, "warning"),
        (95, "warning"),
        (96, "contraindicated"),
        (-127, "contraindicated"),
    ],
)
def test_tiers(value: int, expected: str) -> None:
    assert tier(value) == expected


@pytest.mark.parametrize(
    "text",
    [
        "version: 2\ntees: {}",
        "tees: {sample: {rules: [{trust_claim: bogus, value: 1, when: [{claim: a, op: eq, value: 1}]}]}}",
        "tees: {sample: {rules: [{trust_claim: hardware, value: 500, when: [{claim: a, op: eq, value: 1}]}]}}",  # noqa: E501
        "tees: {sample: {rules: [{trust_claim: hardware, value: 2, when: [{claim: a, op: eq}]}]}}",
        "tees: {sample: {rules: [{trust_claim: hardware, value: 2, when: [{claim: a, op: like, value: 1}]}]}}",  # noqa: E501
        "tees: [unclosed",
        "x" * 70000,
    ],
)
def test_bad_policies(text: str) -> None:
    with pytest.raises(PolicyInvalid):
        parse_policy(text)
