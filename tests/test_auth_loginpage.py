"""The login form: one password field, no script, no external asset, values escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from portproxy.auth.loginpage import render_login_page


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(page: bytes) -> list[tuple[str, dict[str, str | None]]]:
    collector = Collector()
    collector.feed(page.decode("utf-8"))
    return collector.tags


def test_form_posts_to_login_with_one_password_field_and_a_submit_button() -> None:
    tags = parse(render_login_page(to="/proxy/3000/", error=None))
    forms = [a for t, a in tags if t == "form"]
    assert forms == [{"action": "/login", "method": "post"}]
    inputs = [a for t, a in tags if t == "input"]
    passwords = [a for a in inputs if a.get("type") == "password"]
    assert len(passwords) == 1
    field = passwords[0]
    assert field["name"] == "password"
    assert "autofocus" in field and field["autocomplete"] == "current-password"
    labels = [a for t, a in tags if t == "label"]
    assert labels == [{"for": field["id"]}]
    hidden = [a for a in inputs if a.get("type") == "hidden"]
    assert hidden == [{"type": "hidden", "name": "to", "value": "/proxy/3000/"}]
    assert [a.get("type") for t, a in tags if t == "button"] == ["submit"]


def test_page_is_html5_with_a_language_and_utf8() -> None:
    page = render_login_page(to="/", error=None)
    assert page.startswith(b"<!DOCTYPE html>")
    assert b'<html lang="en">' in page and b'<meta charset="utf-8">' in page


def test_page_has_no_script_and_no_external_url() -> None:
    page = render_login_page(to="/", error="Incorrect password.").lower()
    assert b"<script" not in page and b"javascript:" not in page
    assert not re.search(rb"(src|href)\s*=", page)
    assert b"http:" not in page and b"https:" not in page and b"//" not in page
    assert b"@import" not in page and b"url(" not in page


def test_error_is_shown_and_announced() -> None:
    page = render_login_page(to="/", error="Incorrect password.")
    assert b'role="alert"' in page and b"Incorrect password." in page
    assert b'aria-invalid="true"' in page
    assert b"role=" not in render_login_page(to="/", error=None)


@pytest.mark.parametrize(
    "evil",
    [
        '"><script>alert(1)</script>',
        "'><img src=x onerror=alert(1)>",
        "</form><form action=https://evil.com>",
    ],
)
def test_every_echoed_value_is_escaped(evil: str) -> None:
    page = render_login_page(to="/x?" + evil, error=evil, action="/login" + evil)
    assert (
        b"<script" not in page and b"<img" not in page and b"<form action=https" not in page
    )
    tags = parse(page)
    assert [t for t, _ in tags].count("form") == 1
    hidden = [a for t, a in tags if t == "input" and a.get("type") == "hidden"]
    assert hidden[0]["value"] == "/x?" + evil


def test_action_follows_the_mount() -> None:
    page = render_login_page(to="/", error=None, action="/.portproxy/login")
    assert b'action="/.portproxy/login"' in page
