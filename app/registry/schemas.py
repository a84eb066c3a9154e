from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field

from app.core.schemas import BirthDate, IdNumber, Name, Phone, ResponseModel, StrictModel, Text
from app.registry.idnumber import Sex


class GuardianIn(StrictModel):
    id_number: IdNumber
    relation: Literal["parent", "guardian"] = "parent"


class CitizenIn(StrictModel):
    """A registry record as the registry authority submits it."""

    id_number: IdNumber
    full_name: Name
    date_of_birth: BirthDate
    sex: Sex
    residence: Text
    phone: Phone | None = None
    guardians: Annotated[list[GuardianIn], Field(max_length=4)] = []


class GuardianOut(ResponseModel):
    id_number: str
    relation: str


class CitizenOut(ResponseModel):
    id_number: str
    full_name: str
    date_of_birth: dt.date
    sex: Sex
    birth_province: str
    birth_province_name: str
    residence: str
    phone: str | None
    guardians: list[GuardianOut]
    wards: list[GuardianOut]
    created_at: dt.datetime
    updated_at: dt.datetime
