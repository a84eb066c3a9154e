"""The 12-digit personal ID number (số định danh cá nhân).

Structure (Decree 137/2015/NĐ-CP art. 13; Circular 59/2021/TT-BCA; Law on Identification 2023
art. 12): digits 1-3 the birth-registration province, digit 4 century and sex, digits 5-6 the
last two digits of the birth year, digits 7-12 random. There is no check digit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from app.core.schemas import is_id_number

PROVINCES: dict[str, str] = {
    "001": "Hà Nội", "002": "Hà Giang", "004": "Cao Bằng", "006": "Bắc Kạn", "008": "Tuyên Quang",
    "010": "Lào Cai", "011": "Điện Biên", "012": "Lai Châu", "014": "Sơn La", "015": "Yên Bái",
    "017": "Hòa Bình", "019": "Thái Nguyên", "020": "Lạng Sơn", "022": "Quảng Ninh", "024": "Bắc Giang",
    "025": "Phú Thọ", "026": "Vĩnh Phúc", "027": "Bắc Ninh", "030": "Hải Dương", "031": "Hải Phòng",
    "033": "Hưng Yên", "034": "Thái Bình", "035": "Hà Nam", "036": "Nam Định", "037": "Ninh Bình",
    "038": "Thanh Hóa", "040": "Nghệ An", "042": "Hà Tĩnh", "044": "Quảng Bình", "045": "Quảng Trị",
    "046": "Thừa Thiên Huế", "048": "Đà Nẵng", "049": "Quảng Nam", "051": "Quảng Ngãi", "052": "Bình Định",
    "054": "Phú Yên", "056": "Khánh Hòa", "058": "Ninh Thuận", "060": "Bình Thuận", "062": "Kon Tum",
    "064": "Gia Lai", "066": "Đắk Lắk", "067": "Đắk Nông", "068": "Lâm Đồng", "070": "Bình Phước",
    "072": "Tây Ninh", "074": "Bình Dương", "075": "Đồng Nai", "077": "Bà Rịa - Vũng Tàu",
    "079": "Hồ Chí Minh", "080": "Long An", "082": "Tiền Giang", "083": "Bến Tre", "084": "Trà Vinh",
    "086": "Vĩnh Long", "087": "Đồng Tháp", "089": "An Giang", "091": "Kiên Giang", "092": "Cần Thơ",
    "093": "Hậu Giang", "094": "Sóc Trăng", "095": "Bạc Liêu", "096": "Cà Mau",
}  # fmt: skip


class Sex(StrEnum):
    male = "male"
    female = "female"


class IdRule(StrEnum):
    """Each rule a number can break; the value is the stable code officers see."""

    digits = "format"  # not exactly 12 ASCII digits
    province = "province"  # digits 1-3 not a known province code
    century_sex = "century-sex"  # digit 4 disagrees with the sex or the century of birth
    birth_year = "birth-year"  # digits 5-6 differ from the birth year


RULE_MESSAGES: dict[IdRule, str] = {
    IdRule.digits: "An ID number is exactly 12 digits.",
    IdRule.province: "Digits 1-3 are not a known birth-registration province code.",
    IdRule.century_sex: "Digit 4 does not match the sex and century of birth.",
    IdRule.birth_year: "Digits 5-6 are not the last two digits of the birth year.",
}


@dataclass(frozen=True, slots=True)
class IdNumberParts:
    province: str
    century: int  # first year of the century, e.g. 1900
    sex: Sex
    year_digits: int


def parse_id_number(id_number: str) -> IdNumberParts | None:
    """The encoded parts, or None when the number is not 12 digits from a known province."""
    if not is_id_number(id_number):
        return None
    if id_number[:3] not in PROVINCES:
        return None
    d4 = int(id_number[3])
    return IdNumberParts(
        province=id_number[:3],
        century=1900 + 100 * (d4 // 2),
        sex=Sex.male if d4 % 2 == 0 else Sex.female,
        year_digits=int(id_number[4:6]),
    )


def id_number_violations(
    id_number: str, *, sex: Sex | None = None, date_of_birth: dt.date | None = None
) -> list[IdRule]:
    """Every rule the number breaks for a record with this sex and birth date (empty: valid).

    Without sex or birth date only the structural rules are checked.
    """
    if not is_id_number(id_number):
        return [IdRule.digits]
    violations: list[IdRule] = []
    if id_number[:3] not in PROVINCES:
        violations.append(IdRule.province)
    d4 = int(id_number[3])
    if date_of_birth is not None:
        century = 1900 + 100 * (d4 // 2)
        if not (century <= date_of_birth.year < century + 100) or (
            sex is not None and sex != (Sex.male if d4 % 2 == 0 else Sex.female)
        ):
            violations.append(IdRule.century_sex)
        if int(id_number[4:6]) != date_of_birth.year % 100:
            violations.append(IdRule.birth_year)
    elif sex is not None and sex != (Sex.male if d4 % 2 == 0 else Sex.female):
        violations.append(IdRule.century_sex)
    return violations


def is_well_formed(id_number: str) -> bool:
    """Structural check only (digits and province): what public endpoints may check."""
    return parse_id_number(id_number) is not None


def make_id_number(province: str, sex: Sex, date_of_birth: dt.date, serial: int) -> str:
    """The number a record with these facts would carry (for fixtures and synthetic data)."""
    century_index = (date_of_birth.year - 1900) // 100
    d4 = century_index * 2 + (0 if sex is Sex.male else 1)
    return f"{province}{d4}{date_of_birth.year % 100:02d}{serial % 1_000_000:06d}"
