"""The SD-JWT building blocks (RFC 9901), including property tests of the parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.sharing import sdjwt


def test_disclosures_and_digests() -> None:
    d = sdjwt.make_disclosure("name", "Nguyễn Văn An")
    payload = sdjwt.issuer_payload({"iss": "x"}, [d], digests=8)
    assert payload["_sd_alg"] == "sha-256" and len(payload["_sd"]) == 8
    assert sdjwt.digest(d) in payload["_sd"]
    assert sdjwt.disclosed_claims(payload, [d]) == {"name": "Nguyễn Văn An"}
    assert sdjwt.disclosed_claims(payload, []) == {}
    # Two disclosures of the same value differ (salted) and so do their digests.
    assert sdjwt.make_disclosure("name", "A") != sdjwt.make_disclosure("name", "A")


@pytest.mark.parametrize("name", ["_sd", "...", "iss"])
def test_reserved_or_clashing_names_are_refused(name: str) -> None:
    d = sdjwt.make_disclosure(name, "x")
    payload = sdjwt.issuer_payload({"iss": "x"}, [d], digests=1)
    with pytest.raises(sdjwt.SdJwtRejected) as info:
        sdjwt.disclosed_claims(payload, [d])
    assert info.value.reason == "malformed"


def test_other_hash_algorithms_and_nested_disclosures_are_refused() -> None:
    d = sdjwt.make_disclosure("address", {"_sd": ["abc"]})
    payload = sdjwt.issuer_payload({}, [d], digests=1)
    with pytest.raises(sdjwt.SdJwtRejected):
        sdjwt.disclosed_claims(payload, [d])
    with pytest.raises(sdjwt.SdJwtRejected):
        sdjwt.disclosed_claims({**payload, "_sd_alg": "sha-1"}, [])


@given(st.text(max_size=400))
def test_split_never_fails_unexpectedly(text: str) -> None:
    try:
        jwt, disclosures = sdjwt.split(text)
    except sdjwt.SdJwtRejected as exc:
        assert exc.reason == "malformed"
        return
    assert text == sdjwt.serialize(jwt, disclosures)


@given(st.lists(st.text(alphabet="ABCDEFabcdef0123456789-_=+/~ ", max_size=60), max_size=5))
def test_disclosed_claims_never_fails_unexpectedly(disclosures: list[str]) -> None:
    payload = sdjwt.issuer_payload({}, [sdjwt.make_disclosure("name", "x")], digests=4)
    try:
        sdjwt.disclosed_claims(payload, disclosures)
    except sdjwt.SdJwtRejected as exc:
        assert exc.reason == "malformed"
