"""POST /auth/login and bearer-token checking on every authenticated route."""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from goodnight.config import Settings
from goodnight.deps import Services
from goodnight.main import create_app
from tests.support.api import PASSWORD, Api, Member
from tests.support.databases import TEST_JWT_SECRET, settings_for
from tests.support.envelope import assert_error, assert_request_id, assert_validation_error

LOGIN_KEYS = {"token", "token_type", "expires_in", "message"}
# The suite's apps issue tokens for the default lifetime.
TEST_TTL: int = Settings.model_fields["jwt_ttl_seconds"].default
OTHER_SECRET = "another-secret-9876543210-zyxwvutsrqponmlkjihgfedcba"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PUBLIC_ROUTES = {
    ("POST", "/api/v1/users"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/health/ready"),  # for load balancers and orchestrators, which hold no token
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims_for(user_id: str, *, ttl: float = 3600, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def signed(claims: dict[str, Any], *, secret: str = TEST_JWT_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # The test secret is short for HS512; that is beside the point of an algorithm-confusion token.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    """An 'alg: none' token, built by hand: header.payload. with an empty signature."""
    header = b64url(orjson.dumps({"alg": alg, "typ": "JWT"}))
    return f"{header}.{b64url(orjson.dumps(claims))}."


def tampered(token: str, user_id: str) -> str:
    """A real token whose payload was swapped for another user's, keeping the original signature."""
    header, _, signature = token.split(".")
    payload = b64url(orjson.dumps(claims_for(user_id)))
    return f"{header}.{payload}.{signature}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Each builder gets (the victim, a second user) and returns the headers of a request that must be refused.
BAD_AUTHORIZATIONS: dict[str, Callable[[Member, Member], dict[str, str]]] = {
    "missing-header": lambda me, other: {},
    "empty-header": lambda me, other: {"Authorization": ""},
    "bearer-without-token": lambda me, other: {"Authorization": "Bearer"},
    "bearer-blank-token": lambda me, other: {"Authorization": "Bearer    "},
    "token-without-scheme": lambda me, other: {"Authorization": me.token},
    "basic-scheme": lambda me, other: {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
    "token-scheme": lambda me, other: {"Authorization": f"Token {me.token}"},
    "garbage-token": lambda me, other: bearer("not-a-jwt"),
    "three-garbage-segments": lambda me, other: bearer("aaaa.bbbb.cccc"),
    "truncated-signature": lambda me, other: bearer(me.token[:-6]),
    "other-secret": lambda me, other: bearer(signed(claims_for(me.id), secret=OTHER_SECRET)),
    "expired": lambda me, other: bearer(signed(claims_for(me.id, ttl=-60, iat=int(time.time()) - 3600))),
    "alg-none": lambda me, other: bearer(unsigned(claims_for(me.id))),
    "alg-None": lambda me, other: bearer(unsigned(claims_for(me.id), alg="None")),
    "alg-hs512": lambda me, other: bearer(signed(claims_for(me.id), algorithm="HS512")),
    "sub-not-uuid": lambda me, other: bearer(signed(claims_for("not-a-uuid"))),
    "sub-empty": lambda me, other: bearer(signed(claims_for(""))),
    "no-sub": lambda me, other: bearer(signed({"iat": int(time.time()), "exp": int(time.time()) + 600})),
    "no-exp": lambda me, other: bearer(signed(claims_for(me.id, exp=None))),
    "no-iat": lambda me, other: bearer(signed(claims_for(me.id, iat=None))),
    "no-jti": lambda me, other: bearer(signed(claims_for(me.id, jti=None))),
    "empty-jti": lambda me, other: bearer(signed(claims_for(me.id, jti=""))),
    # Signed with the real key, but no server issues tokens like these.
    "hundred-year-exp": lambda me, other: bearer(signed(claims_for(me.id, ttl=100 * 365 * 86400))),
    "longer-than-ttl": lambda me, other: bearer(signed(claims_for(me.id, ttl=TEST_TTL + 1))),
    "iat-in-the-future": lambda me, other: bearer(
        signed(claims_for(me.id, iat=int(time.time()) + 120, exp=int(time.time()) + 600))
    ),
    "iat-not-a-number": lambda me, other: bearer(signed(claims_for(me.id, iat="yesterday"))),
    "payload-swapped": lambda me, other: bearer(tampered(me.token, other.id)),
    "oversized": lambda me, other: bearer(signed(claims_for(me.id, padding="x" * 5000))),
}


def _routes() -> Iterator[tuple[str, str, bool]]:
    """(method, path, requires a token) for every API operation the app serves, read from its OpenAPI
    document: the bearer dependency marks an operation with a security requirement."""
    document = create_app(settings_for("sqlite+aiosqlite://")).openapi()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, bool(operation.get("security"))


ALL_ROUTES = sorted(_routes())
AUTHENTICATED_ROUTES = [(method, path) for method, path, needs_token in ALL_ROUTES if needs_token]


def concrete(path: str) -> str:
    """The route path with every {parameter} filled with a fresh id, and the /api/v1 prefix dropped."""
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path).removeprefix("/api/v1")


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"username": username, "password": password})


# --- login -------------------------------------------------------------------------------------------------


async def test_login_returns_a_bearer_token(api: Api, client: httpx.AsyncClient, services: Services) -> None:
    alice = await api.register("alice")
    response = await login(client, "alice", PASSWORD)
    assert response.status_code == 200, response.text
    assert_request_id(response)
    body = response.json()
    assert set(body) == LOGIN_KEYS, body
    assert body["token_type"] == "bearer"
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["expires_in"] == services.settings.jwt_ttl_seconds
    claims = jwt.decode(body["token"], TEST_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == alice.id
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    me = await client.get("/users/me", headers=bearer(body["token"]))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == alice.id


async def test_login_tokens_differ_and_all_work(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("alice")
    first = (await login(client, "alice", PASSWORD)).json()["token"]
    second = (await login(client, "alice", PASSWORD)).json()["token"]
    assert first != second
    for token in (first, second):
        assert (await client.get("/users/me", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize("spelling", ["alice", "ALICE", "aLiCe", "Alice"])
async def test_login_username_is_case_insensitive(api: Api, client: httpx.AsyncClient, spelling: str) -> None:
    alice = await api.register("Alice")
    response = await login(client, spelling, PASSWORD)
    assert response.status_code == 200, response.text
    assert jwt.decode(response.json()["token"], TEST_JWT_SECRET, algorithms=["HS256"])["sub"] == alice.id


async def test_login_failures_are_indistinguishable(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("alice")
    unknown_user = assert_error(await login(client, "nobody", PASSWORD), 401, "invalid_credentials")
    wrong_password = assert_error(await login(client, "alice", PASSWORD + "!"), 401, "invalid_credentials")
    assert unknown_user["message"] == wrong_password["message"]
    assert unknown_user.get("details") == wrong_password.get("details")


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("alice", PASSWORD.upper(), id="password-is-case-sensitive"),
        pytest.param("alice", PASSWORD[:-1], id="password-prefix"),
        pytest.param("alice", PASSWORD + " ", id="password-trailing-space"),
        pytest.param("alice", "", id="empty-password"),
        pytest.param("alice ", PASSWORD, id="username-trailing-space"),
        pytest.param("alicé", PASSWORD, id="username-accented"),
        pytest.param("alicf", PASSWORD, id="unknown-user"),
        pytest.param("no such user!", PASSWORD, id="username-outside-registration-pattern"),
        pytest.param("", PASSWORD, id="empty-username"),
        pytest.param("alice' OR '1'='1", "' OR '1'='1", id="sql"),
    ],
)
async def test_login_rejects_bad_credentials(
    api: Api, client: httpx.AsyncClient, username: str, password: str
) -> None:
    await api.register("alice")
    assert_error(await login(client, username, password), 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="empty-object"),
        pytest.param({"username": "alice"}, id="missing-password"),
        pytest.param({"username": 1, "password": PASSWORD}, id="username-int"),
        pytest.param([{"username": "alice", "password": PASSWORD}], id="array"),
    ],
)
async def test_login_malformed_body_is_422(client: httpx.AsyncClient, body: Any) -> None:
    assert_validation_error(await client.post("/auth/login", json=body))


# --- bearer tokens -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_AUTHORIZATIONS))
async def test_bad_authorization_is_401_unauthorized(api: Api, client: httpx.AsyncClient, kind: str) -> None:
    me = await api.register("victim")
    other = await api.register("other")
    headers = BAD_AUTHORIZATIONS[kind](me, other)
    assert_error(await client.get("/users/me", headers=headers), 401, "unauthorized")
    # The real token still works: the refusal is about the header, not the account.
    assert (await client.get("/users/me", headers=me.headers)).status_code == 200


@pytest.mark.parametrize("kind", ["expired", "other-secret", "alg-none", "payload-swapped"])
async def test_bad_token_cannot_write(api: Api, client: httpx.AsyncClient, kind: str) -> None:
    me = await api.register("victim")
    target = await api.register("target")
    response = await client.post(f"/socials/follow/{target.id}", headers=BAD_AUTHORIZATIONS[kind](me, target))
    assert_error(response, 401, "unauthorized")
    profile = (await client.get(f"/users/{target.id}", headers=target.headers)).json()
    assert profile["followers_count"] == 0


async def test_token_stops_working_when_it_expires(api: Api, client: httpx.AsyncClient) -> None:
    me = await api.register("alice")
    # Whole seconds: PyJWT truncates a fractional exp. Valid for at least one more second from now.
    expires_at = int(time.time()) + 2
    short_lived = signed({"sub": me.id, "iat": expires_at - 2, "exp": expires_at, "jti": "short-lived"})
    assert (await client.get("/users/me", headers=bearer(short_lived))).status_code == 200
    await asyncio.sleep(max(0.0, expires_at + 0.05 - time.time()))
    # Even though it verified a moment ago (and may be cached), an expired token is refused.
    assert_error(await client.get("/users/me", headers=bearer(short_lived)), 401, "unauthorized")


async def test_token_for_unknown_user(api: Api, client: httpx.AsyncClient) -> None:
    someone = await api.register("someone")
    ghost = bearer(signed(claims_for(str(uuid.uuid4()))))
    assert_error(await client.get("/users/me", headers=ghost), 401, "unauthorized")
    assert_error(await client.post(f"/socials/follow/{someone.id}", headers=ghost), 401, "unauthorized")
    assert_error(await client.post(f"/socials/unfollow/{someone.id}", headers=ghost), 401, "unauthorized")
    profile = (await client.get(f"/users/{someone.id}", headers=someone.headers)).json()
    assert profile["followers_count"] == 0


def test_every_route_but_registration_login_and_health_checks_needs_a_token() -> None:
    public = {(method, path) for method, path, needs_token in ALL_ROUTES if not needs_token}
    assert public == PUBLIC_ROUTES
    assert ("GET", "/api/v1/users/me") in AUTHENTICATED_ROUTES


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED_ROUTES)
async def test_authenticated_route_without_token_is_401(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, concrete(path))
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED_ROUTES)
async def test_authenticated_route_with_forged_token_is_401(
    api: Api, client: httpx.AsyncClient, method: str, path: str
) -> None:
    me = await api.register("victim")
    response = await client.request(method, concrete(path), headers=bearer(unsigned(claims_for(me.id))))
    assert_error(response, 401, "unauthorized")
