from __future__ import annotations

from tests.support.api import Api


async def test_register_login_and_me(api: Api) -> None:
    alice = await api.register("alice")
    me = await api.client.get("/users/me", headers=alice.headers)
    assert me.status_code == 200
    assert me.json()["username"] == "alice"
