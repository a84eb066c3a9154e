import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from app.registry.idnumber import PROVINCES, IdRule, Sex, id_number_violations, make_id_number, parse_id_number

provinces = st.sampled_from(sorted(PROVINCES))
sexes = st.sampled_from(list(Sex))
birth_dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2399, 12, 31))
serials = st.integers(min_value=0, max_value=999_999)


def test_reference_example() -> None:
    # docs/facts.md §1: 001099012345 is a man born in 1999 whose birth was registered in Hà Nội.
    parts = parse_id_number("001099012345")
    assert parts is not None
    assert (parts.province, parts.century, parts.sex, parts.year_digits) == ("001", 1900, Sex.male, 99)
    assert id_number_violations("001099012345", sex=Sex.male, date_of_birth=dt.date(1999, 3, 1)) == []


@given(provinces, sexes, birth_dates, serials)
def test_made_numbers_are_valid_and_round_trip(province: str, sex: Sex, dob: dt.date, serial: int) -> None:
    number = make_id_number(province, sex, dob, serial)
    assert len(number) == 12 and number.isdigit()
    assert id_number_violations(number, sex=sex, date_of_birth=dob) == []
    parts = parse_id_number(number)
    assert parts is not None
    assert parts.province == province and parts.sex == sex and parts.century <= dob.year < parts.century + 100


@given(provinces, sexes, birth_dates, serials)
def test_other_sex_breaks_century_sex_rule(province: str, sex: Sex, dob: dt.date, serial: int) -> None:
    number = make_id_number(province, sex, dob, serial)
    other = Sex.female if sex is Sex.male else Sex.male
    assert id_number_violations(number, sex=other, date_of_birth=dob) == [IdRule.century_sex]


@given(provinces, sexes, birth_dates, serials, st.integers(min_value=1, max_value=99))
def test_other_birth_year_is_caught(province: str, sex: Sex, dob: dt.date, serial: int, shift: int) -> None:
    number = make_id_number(province, sex, dob, serial)
    year = dob.year + shift
    if year > 2399:
        year = dob.year - shift
    if year < 1900:
        return
    other = dob.replace(year=year, day=min(dob.day, 28))
    assert id_number_violations(number, sex=sex, date_of_birth=other) != []


@given(st.text(max_size=14))
def test_anything_not_twelve_ascii_digits_is_a_format_error(text: str) -> None:
    if len(text) == 12 and text.isascii() and text.isdigit():
        return
    assert id_number_violations(text) == [IdRule.digits]
    assert parse_id_number(text) is None


def test_unknown_province_and_non_ascii_digits() -> None:
    assert id_number_violations("003099012345") == [IdRule.province]  # 003 is not a province code
    assert id_number_violations("٠٠١٠٩٩٠١٢٣٤٥") == [IdRule.digits]  # Arabic-Indic digits
    assert IdRule.province in id_number_violations("999099012345", sex=Sex.male, date_of_birth=dt.date(1999, 1, 1))


def test_century_digit_for_2000s() -> None:
    # 2000s: male 2, female 3.
    assert make_id_number("079", Sex.female, dt.date(2005, 6, 1), 1) == "079305000001"
    assert id_number_violations("079305000001", sex=Sex.female, date_of_birth=dt.date(2005, 6, 1)) == []
    assert id_number_violations("079305000001", sex=Sex.female, date_of_birth=dt.date(1905, 6, 1)) == [
        IdRule.century_sex
    ]
