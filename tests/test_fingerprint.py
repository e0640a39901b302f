"""The one fingerprint: folder names and skip keys depend on it giving the same 12 hex for the same payload."""
from __future__ import annotations

from pipeline.data.prepare import prepare_fingerprint
from pipeline.fingerprint import fingerprint_of


def test_the_same_payload_gives_the_same_12_hex_whatever_the_key_order():
    # sha256 of '{"config": "def456", "raw": "abc123"}': the value every earlier copy of the hash computed
    assert fingerprint_of({"raw": "abc123", "config": "def456"}) == "dae47672dca1"
    assert fingerprint_of({"config": "def456", "raw": "abc123"}) == "dae47672dca1"
    assert prepare_fingerprint("abc123", "def456") == "dae47672dca1"


def test_any_change_of_the_payload_changes_the_fingerprint():
    assert fingerprint_of({"raw": "abc123", "config": "def457"}) != "dae47672dca1"
    assert fingerprint_of([["model_1", "a"], ["model_2", "b"]]) != fingerprint_of([["model_2", "b"], ["model_1", "a"]])
