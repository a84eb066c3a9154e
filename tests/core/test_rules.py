import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.passwords import generate_initial_password, password_problems
from app.core.privacy import mask_id_number, scrub
from app.core.schemas import clean_text, fold_name, normalise_phone
from app.registry.service import age_on


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0912345678", "+84912345678"),
        ("+84 912 345 678", "+84912345678"),
        ("84-356-789-012", "+84356789012"),
        ("0084771234567", "+84771234567"),
    ],
)
def test_phone_normalisation(raw: str, e164: str) -> None:
    assert normalise_phone(raw) == e164


@pytest.mark.parametrize("raw", ["0212345678", "091234567", "+1 415 555 0100", "", "09123456789", "abc"])
def test_phone_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        normalise_phone(raw)


@given(st.from_regex(r"\A0[35789][0-9]{8}\Z"))
def test_every_national_mobile_number_normalises(raw: str) -> None:
    assert normalise_phone(raw) == "+84" + raw[1:]


def test_name_folding_and_nfc() -> None:
    decomposed = "Nguye\u0302\u0303n Va\u0306n An"  # NFD form of "Nguyễn Văn An"
    assert fold_name(decomposed) == fold_name("NGUYỄN  văn an")
    assert clean_text(decomposed) == "Nguyễn Văn An"
    for bad in ["a\x00b", "line\nbreak", "\ud800", "   "]:
        with pytest.raises(ValueError):
            clean_text(bad)


def test_age_on_birthdays() -> None:
    dob = dt.date(2012, 12, 1)
    assert age_on(dob, dt.date(2026, 11, 30)) == 13
    assert age_on(dob, dt.date(2026, 12, 1)) == 14
    leap = dt.date(2012, 2, 29)
    assert age_on(leap, dt.date(2026, 2, 28)) == 13
    assert age_on(leap, dt.date(2026, 3, 1)) == 14


def test_password_policy() -> None:
    assert password_problems("correct horse battery", min_length=15) == []
    assert password_problems("short", min_length=15)
    assert password_problems("123456789012345", min_length=15)  # sequential
    assert password_problems("aaaaaaaaaaaaaaaaaa", min_length=15)
    assert password_problems("abcabcabcabcabcabc", min_length=15)
    assert password_problems("qwertyuiopasdfgh", min_length=15)  # blocklisted
    assert password_problems("my id 001099012345 is safe", min_length=15, context_words=("001099012345",))
    assert password_problems("x" * 129 + "yz", min_length=15)
    assert password_problems("emoji passwords are fine 🔑 ok", min_length=15) == []


def test_initial_passwords_pass_the_policy() -> None:
    for _ in range(50):
        pw = generate_initial_password()
        assert len(pw) == 16
        assert password_problems(pw, min_length=15) == []


def test_masking() -> None:
    assert mask_id_number("001099012345") == "001*******45"
    assert (
        scrub("GET /registry/citizens/001099012345 +84912345678") == "GET /registry/citizens/001*******45 +84******678"
    )
    assert scrub("order 1234567890123") == "order 1234567890123"  # 13 digits is not an ID number


def test_lookalike_input_is_refused() -> None:
    for spoof in ["Nguyễn\u202eAn", "Nguyễn\u200bVăn", "Ng\u00aduyễn"]:
        with pytest.raises(ValueError):
            clean_text(spoof)
    with pytest.raises(ValueError):
        normalise_phone("+849\u06612345678")  # an Arabic-Indic digit
