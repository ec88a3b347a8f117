"""``/auth``: sign-up, tokens, and who may call what (docs/api.md)."""

from __future__ import annotations

import jwt
import pytest

from flashsale.auth.security import Principal, create_access_token

from .support import PASSWORD, Api, expect

pytestmark = pytest.mark.anyio


async def test_signup_creates_a_user_with_an_empty_wallet(api: Api) -> None:
    r = await api.post(
        "/auth/signup", json={"email": "Kim@Example.com", "password": PASSWORD, "name": "Kim"}
    )
    body = expect(r, 201)
    assert set(body) == {"user_id", "email", "name"}
    assert body["email"] == "kim@example.com"
    assert body["name"] == "Kim"
    token = await api.token("kim@example.com")
    wallet = expect(
        await api.client.get("/api/v1/me/wallet", headers={"Authorization": f"Bearer {token}"}),
        200,
    )
    assert wallet["user_id"] == body["user_id"]
    assert wallet["balance"] == 0


async def test_weak_password_is_422(api: Api, subtests: pytest.Subtests) -> None:
    before = api.snapshot()
    for password in ["short1!", "password1", "password!", "12345678!", "", "a1!" + "a" * 70]:
        with subtests.test(password=password):
            body = {"email": "weak@example.com", "password": password, "name": "W"}
            err = expect(await api.post("/auth/signup", json=body), 422, "VALIDATION_ERROR")
            assert any("password" in e["loc"] for e in err["details"]["errors"])
    assert api.snapshot() == before


BAD_SIGNUPS: list[dict[str, object]] = [
    {"email": "not-an-email", "password": PASSWORD, "name": "X"},
    {"email": "x@example.com", "password": PASSWORD, "name": ""},
    {"email": "x@example.com", "password": PASSWORD, "name": "x" * 101},
    {"email": "x@example.com", "password": PASSWORD},
    {"email": "x@example.com", "password": 12345678, "name": "X"},
    {},
]


async def test_bad_signup_body_is_422(api: Api, subtests: pytest.Subtests) -> None:
    before = api.snapshot()
    for payload in BAD_SIGNUPS:
        with subtests.test(payload=payload):
            expect(await api.post("/auth/signup", json=payload), 422, "VALIDATION_ERROR")
    assert api.snapshot() == before


async def test_duplicate_email_is_409_case_insensitively(api: Api) -> None:
    body = {"email": "dup@example.com", "password": PASSWORD, "name": "A"}
    expect(await api.post("/auth/signup", json=body), 201)
    before = api.snapshot()
    for email in ("dup@example.com", "DUP@example.com", "Dup@Example.COM"):
        r = await api.post("/auth/signup", json={**body, "email": email})
        expect(r, 409, "EMAIL_TAKEN")
    assert api.snapshot() == before


async def test_token(api: Api) -> None:
    user = await api.user()
    r = await api.client.post(
        "/api/v1/auth/token", data={"username": user.email.upper(), "password": PASSWORD}
    )
    body = expect(r, 200)
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == api.state.settings.jwt_ttl_s
    assert isinstance(body["access_token"], str) and body["access_token"]


@pytest.mark.parametrize(
    ("username", "password"),
    [("known", "Wr0ng-pass!"), ("nobody@example.com", PASSWORD), ("known", PASSWORD + "x")],
)
async def test_wrong_credentials_are_401(api: Api, username: str, password: str) -> None:
    user = await api.user()
    username = user.email if username == "known" else username
    r = await api.client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )
    expect(r, 401, "INVALID_CREDENTIALS")


async def test_token_wants_a_form(api: Api) -> None:
    r = await api.client.post("/api/v1/auth/token", json={"username": "a", "password": "b"})
    expect(r, 422, "VALIDATION_ERROR")


PROTECTED = [
    ("GET", "/me/wallet"),
    ("POST", "/me/wallet/charges"),
    ("GET", "/me/wallet/transactions"),
    ("GET", "/me/orders"),
    ("GET", "/me/coupons"),
    ("POST", "/orders"),
    ("GET", "/orders/1"),
    ("POST", "/coupons/1/issue"),
    ("POST", "/admin/products"),
    ("POST", "/admin/coupons"),
    ("POST", "/admin/variants/1/restock"),
]


def _expired_token(api: Api, user_id: int) -> str:
    secret = api.state.settings.jwt_secret.get_secret_value()
    return create_access_token(Principal(user_id=user_id, role="customer"), secret, -10)


async def test_missing_or_bad_bearer_is_401(api: Api, subtests: pytest.Subtests) -> None:
    secret = api.state.settings.jwt_secret.get_secret_value()
    admin_id = api.admin.user_id
    forged = {
        "expired": _expired_token(api, admin_id),
        "wrong secret": create_access_token(Principal(admin_id, "admin"), "x" * 48, 3600),
        "no role": jwt.encode({"sub": str(admin_id), "exp": 2**40}, secret, "HS256"),
        "no exp": jwt.encode({"sub": str(admin_id), "role": "admin"}, secret, "HS256"),
        "bad sub": jwt.encode({"sub": "admin", "role": "admin", "exp": 2**40}, secret, "HS256"),
        "alg none": jwt.encode(
            {"sub": str(admin_id), "role": "admin", "exp": 2**40}, "", algorithm="none"
        ),
    }
    authorizations: list[str | None] = [
        None,
        "",
        "Bearer",
        "Bearer garbage",
        "Bearer a.b.c",
        "Basic dXNlcjpwYXNz",
        *(f"Bearer {token}" for token in forged.values()),
    ]
    before = api.snapshot()
    for authorization in authorizations:
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, path in PROTECTED:
            with subtests.test(authorization=authorization, path=path):
                r = await api.client.request(method, "/api/v1" + path, headers=headers, json={})
                expect(r, 401, "UNAUTHENTICATED")
    assert api.snapshot() == before


async def test_expired_token_is_refused_but_a_fresh_one_works(api: Api) -> None:
    user = await api.user()
    r = await api.client.get(
        "/api/v1/me/wallet",
        headers={"Authorization": f"Bearer {_expired_token(api, user.user_id)}"},
    )
    expect(r, 401, "UNAUTHENTICATED")
    expect(await api.get("/me/wallet", user), 200)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/products", {}),
        ("/admin/coupons", {}),
        ("/admin/variants/1/restock", {"quantity": 1}),
    ],
)
async def test_customer_on_admin_is_403(api: Api, path: str, body: dict[str, object]) -> None:
    user = await api.user()
    before = api.snapshot()
    expect(await api.post(path, user, json=body), 403, "FORBIDDEN")
    assert api.snapshot() == before


async def test_catalog_reads_need_no_token(api: Api) -> None:
    product = await api.product()
    expect(await api.get("/products"), 200)
    expect(await api.get(f"/products/{product['id']}"), 200)
    expect(await api.get("/products/popular"), 200)
    coupon = await api.coupon()
    expect(await api.get(f"/coupons/{coupon['id']}"), 200)


async def test_token_of_an_unknown_user_is_401_everywhere(api: Api) -> None:
    secret = api.state.settings.jwt_secret.get_secret_value()
    token = create_access_token(Principal(user_id=424242, role="customer"), secret, 3600)
    headers = {"Authorization": f"Bearer {token}"}
    r = await api.client.get("/api/v1/me/wallet", headers=headers)
    expect(r, 401, "UNAUTHENTICATED")
    before = api.snapshot()
    r = await api.client.post("/api/v1/me/wallet/charges", headers=headers, json={"amount": 1000})
    expect(r, 401, "UNAUTHENTICATED")
    assert api.snapshot() == before
