"""Bad input is refused before it reaches the database, by class of input, not route by route:
every string a request body takes is bounded, and where it is stored its bound is its column's;
every integer parameter is bounded; body values are taken only in their own JSON type; no
NUL character gets in (tests/core/test_bad_input.py has the routes' answers)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String

from app.models import Base
from app.openapi import openapi_document

# Where each string a request body takes ends up. "table.column": stored there, so its maxLength
# must be the column's. Otherwise why it needs no column bound: it is normalised to a shorter
# form first, stored in a JSON column, hashed, or not stored.
STORED: dict[str, str] = {
    "AssistedRegistrationIn.dependents[]": "id-number",
    "AssistedRegistrationIn.email": "accounts.email",
    "AssistedRegistrationIn.id_number": "id-number",
    "AssistedRegistrationIn.phone": "phone",
    "Biometrics.enrolled_at": "json",
    "Biometrics.enrollment_station": "json",
    "Biometrics.face_template_id": "json",
    "Biometrics.fingerprint_template_ids[]": "json",
    "CardApplicationIn.date_of_birth": "date",
    "CardApplicationIn.ethnicity": "json",
    "CardApplicationIn.full_name": "json",
    "CardApplicationIn.hometown": "json",
    "CardApplicationIn.permanent_address": "json",
    "CardApplicationIn.religion": "json",
    "CitizenIn.date_of_birth": "date",
    "CitizenIn.full_name": "citizens.full_name",
    "CitizenIn.id_number": "id-number",
    "CitizenIn.phone": "phone",
    "CitizenIn.residence": "citizens.residence",
    "ClaimApprovalIn.phone": "phone",
    "ClientIn.auth_method": "enum",
    "ClientIn.backchannel_logout_uri": "oauth_clients.backchannel_logout_uri",
    "ClientIn.grant_types[]": "enum",
    "ClientIn.id_token_alg": "enum",
    "ClientIn.jwks_uri": "oauth_clients.jwks_uri",
    "ClientIn.kind": "enum",
    "ClientIn.name": "oauth_clients.name",
    "ClientIn.post_logout_redirect_uris[]": "json",
    "ClientIn.redirect_uris[]": "json",
    "ClientIn.scopes[]": "json",
    "ClientIn.sector_identifier": "oauth_clients.sector_identifier",
    "ClientStatusIn.status": "enum",
    "DeclaredDocumentIn.number": "declared_documents.number",
    "Decision.reason": "officer_registrations.reason",
    "DocumentIn.category": "documents.category",
    "DocumentIn.expires_on": "date",
    "DocumentIn.holder_id_number": "id-number",
    "DocumentIn.issued_on": "date",
    "DocumentIn.number": "documents.number",
    "DocumentQuery.holder_id_number": "id-number",
    "DocumentQuery.number": "documents.number",
    "DocumentUpdate.category": "documents.category",
    "DocumentUpdate.expires_on": "date",
    "DocumentUpdate.issued_on": "date",
    "EkycRequestIn.binding_message": "ekyc_requests.binding_message",
    "EkycRequestIn.claims[]": "enum",
    "EkycRequestIn.id_number": "id-number",
    "EkycRequestIn.purpose": "ekyc_requests.purpose",
    "GuardianIn.id_number": "id-number",
    "GuardianIn.relation": "enum",
    "IdentityQuery.date_of_birth": "date",
    "IdentityQuery.full_name": "not stored (compared)",
    "IdentityQuery.id_number": "id-number",
    "IdentityQuery.match": "enum",
    "IdentityQuery.phone": "phone",
    "OtpVerify.code": "hashed",
    "PasswordChange.current_password": "hashed",
    "PasswordChange.id_number": "id-number",
    "PasswordChange.new_password": "hashed",
    "PasswordResetComplete.code": "hashed",
    "PasswordResetComplete.new_password": "hashed",
    "PasswordResetStart.id_number": "id-number",
    "PasswordResetStart.phone": "phone",
    "PhoneChange.phone": "phone",
    "PhoneChange.reason": "json",
    "RedeemIn.token": "not stored (verified; the body limit and 413 share-too-large bound it)",
    "Relative.full_name": "json",
    "Relative.id_number": "id-number",
    "Relative.relation": "enum",
    "RegistrationStart.date_of_birth": "date",
    "RegistrationStart.full_name": "not stored (compared)",
    "RegistrationStart.id_number": "id-number",
    "RegistrationStart.phone": "phone",
    "ReinstatementIn.reason": "documents.status_reason",
    "Rejection.reason": "officer_registrations.reason",
    "ShareIn.attributes[]": "enum",
    "ShareIn.audience": "pattern",
    "ShareIn.document_id": "uuid",
    "ShareIn.for": "uuid",
    "ShareIn.purpose": "consents.purpose",
    "SignIn.id_number": "id-number",
    "SignIn.password": "hashed",
    "StaffLogin.password": "hashed",
    "StaffLogin.username": "staff.username",
    "StatusChange.reason": "json",
    "SuspensionIn.reason": "documents.status_reason",
}
# The phone is stored in E.164 (+84 and nine digits) after normalise_phone; the ID number is 12 digits.
NORMALISED = {"phone": ("accounts.phone", 12), "id-number": ("citizens.id_number", 12)}


def request_strings(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas = doc["components"]["schemas"]
    found: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()

    def walk_schema(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for prop, spec in schemas[name].get("properties", {}).items():
            walk_value(f"{name}.{prop}", spec)

    def walk_value(where: str, spec: dict[str, Any]) -> None:
        if "$ref" in spec:
            walk_schema(spec["$ref"].rsplit("/", 1)[1])
            return
        for alternative in spec.get("anyOf", []):
            walk_value(where, alternative)
        if spec.get("type") == "string":
            found[where] = spec
        if spec.get("type") == "array":
            walk_value(where + "[]", spec.get("items", {}))

    for item in doc["paths"].values():
        for operation in item.values():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                walk_value("body", content.get("schema", {}))
    return found


def column_length(where: str) -> int:
    table, column = where.split(".")
    kind = Base.metadata.tables[table].columns[column].type
    assert isinstance(kind, String) and kind.length, where
    return int(kind.length)


def test_every_request_string_is_bounded_and_stored_strings_fit_their_column() -> None:
    strings = request_strings(openapi_document())
    unknown = sorted(set(strings) - set(STORED))
    assert not unknown, f"say where these strings go (STORED): {unknown}"
    for where, spec in strings.items():
        target = STORED[where]
        bounded = (
            "maxLength" in spec
            or "enum" in spec
            or "pattern" in spec
            or spec.get("format") in ("date", "date-time", "uuid")
        )
        if not target.startswith("not stored"):
            assert bounded, f"{where} has no bound in the schema"
        if "." in target and " " not in target:
            assert spec.get("maxLength") == column_length(target), (where, spec.get("maxLength"), target)
        elif target in NORMALISED:
            column, stored_length = NORMALISED[target]
            assert stored_length <= column_length(column), where


def test_integer_parameters_have_the_bounds_of_their_columns() -> None:
    doc = openapi_document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                kinds = [schema, *schema.get("anyOf", [])]
                if any(k.get("type") == "integer" for k in kinds):
                    integer = next(k for k in kinds if k.get("type") == "integer")
                    assert "maximum" in integer and integer["maximum"] <= 2**63 - 1, (method, path, parameter["name"])
