"""A thin test client for the Goodnight API: registers users and remembers their tokens."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct horse battery"
_counter = itertools.count(1)


@dataclass
class Member:
    id: str
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def register(self, username: str | None = None, *, name: str | None = None) -> Member:
        username = username or f"user{next(_counter)}"
        created = await self.client.post(
            "/users", json={"username": username, "password": PASSWORD, "name": name}
        )
        assert created.status_code == 201, created.text
        login = await self.client.post("/auth/login", json={"username": username, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return Member(created.json()["id"], username, login.json()["token"])

    async def follow(self, who: Member, whom: Member) -> None:
        response = await self.client.post(f"/socials/follow/{whom.id}", headers=who.headers)
        assert response.status_code == 201, response.text

    async def unfollow(self, who: Member, whom: Member) -> None:
        response = await self.client.post(f"/socials/unfollow/{whom.id}", headers=who.headers)
        assert response.status_code == 200, response.text

    async def rename(self, who: Member, name: str | None) -> httpx.Response:
        return await self.client.patch("/users/me", json={"name": name}, headers=who.headers)

    async def delete_account(self, who: Member, password: str = PASSWORD) -> httpx.Response:
        body = {"password": password}
        return await self.client.request("DELETE", "/users/me", json=body, headers=who.headers)

    async def sleep(self, who: Member, clocked_in_at: str, clocked_out_at: str) -> dict[str, Any]:
        """A completed, back-dated sleep record."""
        opened = await self.client.post(
            "/sleep_records/clock_in", json={"clocked_in_at": clocked_in_at}, headers=who.headers
        )
        assert opened.status_code == 201, opened.text
        closed = await self.client.post(
            "/sleep_records/clock_out", json={"clocked_out_at": clocked_out_at}, headers=who.headers
        )
        assert closed.status_code == 200, closed.text
        record: dict[str, Any] = closed.json()["sleep_record"]
        return record

    async def feed(self, who: Member, **params: Any) -> httpx.Response:
        return await self.client.get("/sleep_records/followings", params=params, headers=who.headers)

    async def whole_feed(self, who: Member, per_page: int = 3) -> list[dict[str, Any]]:
        """Every item of the feed, following next_cursor to the end."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"per_page": per_page}
            if cursor:
                params["cursor"] = cursor
            page = await self.feed(who, **params)
            assert page.status_code == 200, page.text
            items.extend(page.json()["data"])
            cursor = page.json()["pagination"]["next_cursor"]
            if cursor is None:
                return items
