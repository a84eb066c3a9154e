"""The demo seed, declared in a fixtures file (YAML or JSON) and validated with line-precise
errors. Its JSON Schema is ``app/demo/fixtures.schema.json`` (a test keeps it in sync)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.accounts.schemas import DOCUMENT_FORMATS, DocumentType
from app.core.passwords import password_problems
from app.core.schemas import IdNumber, normalise_phone
from app.registry.idnumber import RULE_MESSAGES, Sex, id_number_violations


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountFixture(_Strict):
    level: Literal[1, 2] = 1
    password: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="None for a dependent under 14 (the guardian acts for them)."
    )
    status: Literal["active", "locked", "revoked"] = "active"
    must_change_password: bool = False
    email: Annotated[str, Field(max_length=254)] | None = None


class DocumentFixture(_Strict):
    type: Literal["driving_licence", "vehicle_registration", "health_insurance", "social_insurance"]
    number: Annotated[str, Field(min_length=1, max_length=40)]
    category: Annotated[str, Field(max_length=40)] | None = None
    issued_on: dt.date
    expires_on: dt.date | None = None
    status: Literal["valid", "suspended", "revoked"] = "valid"
    issuer: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="client_id of the issuing agency (default: the first agency client)."
    )


class CitizenFixture(_Strict):
    key: Annotated[
        str, Field(pattern=r"^[a-z0-9_-]{1,40}$", description="A short name tests use to refer to this citizen.")
    ]
    id_number: IdNumber
    full_name: Annotated[str, Field(min_length=1, max_length=200)]
    date_of_birth: dt.date
    sex: Sex
    residence: Annotated[str, Field(min_length=1, max_length=500)]
    phone: Annotated[str, Field(max_length=20)] | None = None
    guardians: list[Annotated[str, Field(description="key or ID number of a guardian in this file")]] = []
    operator_phones: list[Annotated[str, Field(max_length=20)]] = Field(
        default=[],
        description="Phones the demo's mobile-operator subscriber registry confirms for this citizen "
        "(self-registration without a phone in the population registry).",
    )
    account: AccountFixture | None = None
    documents: list[DocumentFixture] = []


class ClientFixture(_Strict):
    client_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._~-]{1,64}$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Literal["portal", "bank", "agency", "admin"]
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None
    auth_method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"] = "client_secret_basic"
    redirect_uris: list[str] = []
    post_logout_redirect_uris: list[str] = []
    grant_types: list[Literal["authorization_code", "refresh_token", "client_credentials"]] = Field(min_length=1)
    scopes: list[str] = Field(min_length=1)
    id_token_alg: Literal["RS256", "ES256"] = "RS256"
    jwks: dict[str, Any] | None = None
    backchannel_logout_uri: str | None = None
    can_introspect_any: bool = False


class StaffFixture(_Strict):
    username: Annotated[str, Field(pattern=r"^[a-z0-9._-]{3,64}$")]
    display_name: Annotated[str, Field(min_length=1, max_length=200)]
    password: Annotated[str, Field(min_length=8, max_length=128)]
    scopes: list[
        Literal[
            "officer:registry", "admin:registry", "officer:accounts", "officer:approve", "admin:accounts",
            "audit:read", "admin:clients",
        ]
    ] = Field(min_length=1)  # fmt: skip


class Fixtures(_Strict):
    citizens: list[CitizenFixture] = []
    clients: list[ClientFixture] = []
    staff: list[StaffFixture] = []


@dataclass(frozen=True)
class FixtureProblem:
    line: int | None
    path: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class FixturesInvalid(Exception):
    def __init__(self, source: str, problems: list[FixtureProblem]) -> None:
        super().__init__("\n".join(p.render(source) for p in problems))
        self.source = source
        self.problems = problems


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if nxt is None:
                key = next((k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Loader(yaml.SafeLoader):
    """YAML 1.1 would read `on`/`no` as booleans and `1990-05-17` as a date either way; keep
    dates as strings so pydantic reports precise errors."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_fixtures(text: str, source: str = "fixtures") -> Fixtures:
    """Parse and validate; raises FixturesInvalid with one entry per problem."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise FixturesInvalid(
            source,
            [
                FixtureProblem(
                    mark.line + 1 if mark else None, "", f"not valid YAML/JSON: {getattr(exc, 'problem', exc)}"
                )
            ],
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FixturesInvalid(
            source, [FixtureProblem(1, "", "the file must hold a mapping with `citizens` and `clients`")]
        )
    try:
        fixtures = Fixtures.model_validate(data)
    except ValidationError as exc:
        problems = [
            FixtureProblem(_line_of(node, tuple(e["loc"])), _path(tuple(e["loc"])), e["msg"]) for e in exc.errors()
        ]
        raise FixturesInvalid(source, problems) from None
    problems = [FixtureProblem(_line_of(node, loc), _path(loc), msg) for loc, msg in _semantic_problems(fixtures)]
    if problems:
        raise FixturesInvalid(source, problems)
    return fixtures


def _semantic_problems(f: Fixtures) -> list[tuple[tuple[int | str, ...], str]]:
    problems: list[tuple[tuple[int | str, ...], str]] = []
    keys: dict[str, int] = {}
    ids: dict[str, int] = {}
    for i, c in enumerate(f.citizens):
        loc: tuple[int | str, ...] = ("citizens", i)
        if c.key in keys:
            problems.append(((*loc, "key"), f"repeats the key of citizens[{keys[c.key]}]"))
        keys.setdefault(c.key, i)
        if c.id_number in ids:
            problems.append(((*loc, "id_number"), f"repeats the ID number of citizens[{ids[c.id_number]}]"))
        ids.setdefault(c.id_number, i)
        for rule in id_number_violations(c.id_number, sex=c.sex, date_of_birth=c.date_of_birth):
            problems.append(((*loc, "id_number"), RULE_MESSAGES[rule]))
        if c.phone is not None:
            try:
                normalise_phone(c.phone)
            except ValueError as exc:
                problems.append(((*loc, "phone"), str(exc)))
        for j, operator_phone in enumerate(c.operator_phones):
            try:
                normalise_phone(operator_phone)
            except ValueError as exc:
                problems.append(((*loc, "operator_phones", j), str(exc)))
        if c.account is not None and c.account.password is not None:
            for p in password_problems(c.account.password, min_length=8):
                problems.append(((*loc, "account", "password"), p))
    for i, c in enumerate(f.citizens):
        for j, g in enumerate(c.guardians):
            if g not in keys and g not in ids:
                problems.append(
                    (("citizens", i, "guardians", j), f"no citizen with key or ID number {g!r} in this file")
                )
    agencies = {cl.client_id for cl in f.clients if cl.kind == "agency"}
    for i, c in enumerate(f.citizens):
        for j, d in enumerate(c.documents):
            if d.issuer is not None and d.issuer not in agencies:
                problems.append(
                    (("citizens", i, "documents", j, "issuer"), f"no agency client {d.issuer!r} in this file")
                )
            elif d.issuer is None and not agencies:
                problems.append((("citizens", i, "documents", j), "documents need an agency client in this file"))
            if not DOCUMENT_FORMATS[DocumentType(d.type)].match(d.number.upper()):
                problems.append((("citizens", i, "documents", j, "number"), f"not a valid {d.type} number"))
    client_ids: dict[str, int] = {}
    for i, cl in enumerate(f.clients):
        if cl.client_id in client_ids:
            problems.append((("clients", i, "client_id"), f"repeats clients[{client_ids[cl.client_id]}]"))
        client_ids.setdefault(cl.client_id, i)
        if cl.auth_method in ("client_secret_basic", "client_secret_post") and not cl.secret:
            problems.append((("clients", i, "secret"), f"{cl.auth_method} needs a secret (16+ characters)"))
    return problems


def load_fixtures(path: Path | None) -> tuple[Fixtures, str]:
    """The fixtures of ``path``, or the built-in default; and the text they came from."""
    if path is None:
        text = default_fixtures_text()
        return parse_fixtures(text, "built-in fixtures"), text
    text = path.read_text(encoding="utf-8")
    return parse_fixtures(text, str(path)), text


def default_fixtures_text() -> str:
    return resources.files("app.demo").joinpath("data/default-fixtures.yaml").read_text("utf-8")


def json_schema() -> dict[str, Any]:
    schema = Fixtures.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "e-ID demo fixtures"
    return schema
