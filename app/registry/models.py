from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class Citizen(Base):
    """One record of the population registry, keyed by the personal ID number."""

    __tablename__ = "citizens"

    id_number: Mapped[str] = mapped_column(String(12), primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200))
    date_of_birth: Mapped[dt.date] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(6))
    birth_province: Mapped[str] = mapped_column(String(3))
    residence: Mapped[str] = mapped_column(String(500))
    phone: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (CheckConstraint("sex IN ('male', 'female')", name="sex"),)


class GuardianLink(Base):
    """A parent or guardian recorded for a citizen (used for minors under 14).

    The guardian must be a registry record (app/registry/service.py for one record; a bulk
    import also accepts a guardian later in the same file and settles those links at its end).
    The link names the guardian by ID number without a foreign key, so that an import can
    write a batch's links before a later batch's records.
    """

    __tablename__ = "guardian_links"

    ward_id_number: Mapped[str] = mapped_column(
        String(12), ForeignKey("citizens.id_number", ondelete="CASCADE"), primary_key=True
    )
    guardian_id_number: Mapped[str] = mapped_column(String(12), primary_key=True)
    relation: Mapped[str] = mapped_column(String(20))

    __table_args__ = (Index("ix_guardian_links_guardian_id_number", "guardian_id_number"),)
