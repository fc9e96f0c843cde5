# -*- test-case-name: tests.test_auth_loginpage -*-
"""The login form: plain HTML, no JavaScript, no external assets.

One labelled password field that takes focus and lets password managers fill it, a
hidden C{to} carrying the page to return to, and a submit button, so Enter submits.
Every value put in the page is HTML-escaped.
"""

from __future__ import annotations

from html import escape

__all__ = ["CONTENT_SECURITY_POLICY", "render_login_page", "render_ticket_refused"]

#: Sent with the page: nothing but its own inline style, and the form posts only here.
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Sign in - {title}</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1f2328;margin:0}}
main{{max-width:22rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:.5rem;
box-shadow:0 1px 4px rgba(0,0,0,.15)}}
h1{{font-size:1.4rem;margin:0 0 1.25rem}}
label{{display:block;font-weight:600;margin-bottom:.4rem}}
input[type=password]{{box-sizing:border-box;width:100%;padding:.6rem;font-size:1rem;
border:1px solid #8c959f;border-radius:.3rem}}
button{{margin-top:1rem;width:100%;padding:.6rem;font-size:1rem;border:0;
border-radius:.3rem;background:#0969da;color:#fff;cursor:pointer}}
button:focus-visible,input:focus-visible{{outline:3px solid #54aeff;outline-offset:2px}}
.error{{color:#b3261e;background:#fdecea;border-radius:.3rem;padding:.6rem;
margin:0 0 1rem}}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
{error}<form action="{action}" method="post">
<input type="hidden" name="to" value="{to}">
<label for="password">Password</label>
<input type="password" id="password" name="password" required autofocus
 autocomplete="current-password"{described}>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"""


def render_login_page(
    *, to: str, error: str | None, action: str = "/login", title: str = "portproxy"
) -> bytes:
    """Render the form, UTF-8 encoded.

    @param to: where to go after a successful login, sent back in a hidden field.
    @param error: a message shown above the form (announced to screen readers), or
        C{None}.
    @param action: the path the form posts to, the one the page was served from.
    """
    error_html = ""
    described = ""
    if error:
        error_html = f'<p class="error" id="error" role="alert">{escape(error)}</p>\n'
        described = ' aria-describedby="error" aria-invalid="true"'
    page = _PAGE.format(
        title=escape(title),
        error=error_html,
        action=escape(action),
        to=escape(to),
        described=described,
    )
    return page.encode("utf-8")


_REFUSED = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Sign in - {title}</title>
</head>
<body>
<main>
<h1>{title}</h1>
<p role="alert">{message}</p>
<p><a href="{login}">Sign in</a></p>
</main>
</body>
</html>
"""


def render_ticket_refused(*, message: str, login: str, title: str = "portproxy") -> bytes:
    """The page for a refused sign-in ticket: the reason and a link to sign in here.

    @param login: the login page's URL (relative), with its C{to}.
    """
    page = _REFUSED.format(
        title=escape(title), message=escape(message), login=escape(login)
    )
    return page.encode("utf-8")
