# -*- test-case-name: tests.test_home -*-
"""The signed-in user's start page: every listening port at a glance (SPEC 13).

The page is rendered on the server from a list of port entries (the shape of
C{GET /.portproxy/api/ports}), so it is usable without JavaScript; a small inline script
then subscribes to C{./.portproxy/api/ports/events} and re-renders the list from every
C{ports} event, with DOM methods only (an app's page title is attacker-controlled text:
it is never parsed as HTML). Every URL is relative to the page, so the page works under
a front proxy's path prefix. Nothing is loaded from elsewhere, and the
Content-Security-Policy allows only the page's own nonce'd script and style.

Contract for the sharing controls (SPEC 12), which fill a placeholder per port:

  - every port that is not portproxy's own has one
    C{<div class="sharing" data-port="PORT" data-access="private|public">}; the server
    fills it with C{render_home(..., sharing=f)}'s C{f(entry)} (HTML the caller has
    escaped), by default with C{<p class="access-note">} stating the access level (so
    the level shows without JavaScript too);
  - the live script keeps that element across updates: when the list is re-rendered, a
    port that is still listed gets back the very same node (its content and listeners
    survive), with C{data-access} and the text of any C{.access-note} in it updated; a
    new port gets a fresh default placeholder;
  - after every render (the first live one included) the script dispatches
    C{portproxy:ports} on C{document}, a C{CustomEvent} whose C{detail} is the entry
    list, so a sharing script can fill new placeholders;
  - such a script and its style come in through C{extra_script} and C{extra_style},
    which run and apply under the page's nonce (CSP: no other script or style runs).
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from portproxy.http.headers import ClientView
from portproxy.routing.domains import DomainMatcher
from portproxy.routing.publicurl import port_urls, request_base
from portproxy.routing.relative import relative_reference
from portproxy.routing.routes import origin_form, split_target

__all__ = [
    "EVENTS_PATH",
    "IndexResource",
    "PortEntry",
    "content_security_policy",
    "render_home",
]

#: One port as the ports API lists it (SPEC 13); unknown values are C{None}.
PortEntry = Mapping[str, Any]

#: The Server-Sent Events stream the page follows (on the main host).
EVENTS_PATH = b"/.portproxy/api/ports/events"


def content_security_policy(nonce: str) -> bytes:
    """The page's policy: its own nonce'd script and style, the API on this origin,
    nothing else (no external asset, no framing, no foreign form target)."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ).encode("ascii")


def new_nonce() -> str:
    """A fresh CSP nonce (128 random bits, base64url: valid in a nonce-source)."""
    return secrets.token_urlsafe(16)


# The look of the login page (portproxy.auth.loginpage): same palette, type and card.
_STYLE = """
body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1f2328;margin:0;
line-height:1.4}
header,main{max-width:60rem;margin:0 auto;padding:0 1rem}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem;
padding-top:1.5rem;padding-bottom:.5rem}
h1{font-size:1.4rem;margin:0;flex:1 1 auto}
h1 small{font-weight:400;color:#59636e;font-size:1rem;margin-left:.5rem}
button{font:inherit;border-radius:.3rem;cursor:pointer}
header button{padding:.35rem .8rem;border:1px solid #8c959f;background:#fff;
color:#1f2328}
button:focus-visible,a:focus-visible,.cmd:focus-visible{outline:3px solid #54aeff;
outline-offset:2px}
a{color:#0969da}
.live{color:#59636e;font-size:.9rem;margin:.25rem 0 1rem}
.ports{list-style:none;margin:0;padding:0}
.port{background:#fff;border-radius:.5rem;box-shadow:0 1px 4px rgba(0,0,0,.15);
padding:1rem 1.25rem;margin:0 0 1rem;overflow-wrap:anywhere}
.top{display:flex;flex-wrap:wrap;align-items:baseline;gap:.25rem .75rem}
.num{font-size:1.3rem;font-weight:700}
.proc{font-weight:600}
.pid{font-weight:400;color:#59636e}
.label{background:#ddf4ff;color:#0550ae;border-radius:1rem;padding:0 .6rem}
.badge{border-radius:1rem;padding:0 .6rem;font-size:.85rem;font-weight:600;
border:1px solid currentColor}
.badge.private{color:#1a7f37}
.badge.public{color:#fff;background:#bc4c00;border-color:#bc4c00}
.badge.self{color:#59636e}
.facts{margin:.75rem 0 0;display:grid;grid-template-columns:max-content minmax(0,1fr);
gap:.2rem .9rem}
.facts>div{display:contents}
.facts dt{color:#59636e}
.facts dd{margin:0;min-width:0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
.cmd{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.cmd:hover,.cmd:focus{white-space:pre-wrap;overflow-wrap:anywhere}
.warnings{list-style:none;margin:.75rem 0 0;padding:0}
.warnings li{color:#b3261e;background:#fdecea;border-radius:.3rem;padding:.4rem .6rem;
margin:.25rem 0}
.links{list-style:none;margin:.75rem 0 0;padding:0;display:flex;flex-wrap:wrap;
gap:.4rem 1.25rem}
.links li{display:flex;align-items:center;gap:.4rem;min-width:0}
.copy{padding:.1rem .5rem;font-size:.85rem;border:1px solid #0969da;background:#fff;
color:#0969da}
.sharing{margin-top:.75rem;padding-top:.6rem;border-top:1px solid #d1d9e0;
color:#59636e;font-size:.9rem}
.sharing p{margin:0}
.empty{background:#fff;border-radius:.5rem;padding:1.5rem 1.25rem;
box-shadow:0 1px 4px rgba(0,0,0,.15)}
.offscreen{position:fixed;left:-9999px;top:0}
@media (max-width:30rem){.facts{gap:.2rem .6rem}.port{padding:.9rem}}
"""

# The live part. Every value goes in through textContent or an attribute: never HTML.
_SCRIPT = r"""
(function () {
  "use strict";
  var list = document.getElementById("ports");
  if (!list) { return; }
  var empty = document.getElementById("empty");
  var live = document.getElementById("live");
  var root = list.getAttribute("data-root") || "./";
  var events = new URL(list.getAttribute("data-events"), document.baseURI).href;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  var FAMILIES = {ipv4: "IPv4", ipv6: "IPv6"};
  function known(v) { return v !== undefined && v !== null && v !== ""; }
  function quote(arg) {
    arg = String(arg);
    if (arg === "") { return "''"; }
    if (/^[A-Za-z0-9_@%+=:,.\/-]+$/.test(arg)) { return arg; }
    return "'" + arg.replace(/'/g, "'\"'\"'") + "'";
  }
  function command(c) { return Array.isArray(c) ? c.map(quote).join(" ") : c; }
  function fact(dl, name, value) {
    if (!known(value)) { return; }
    var row = el("div");
    row.appendChild(el("dt", null, name));
    var dd = el("dd");
    if (value instanceof Node) { dd.appendChild(value); } else { dd.textContent = value; }
    row.appendChild(dd);
    dl.appendChild(row);
  }
  function httpText(p) {
    if (p.http === true) { return known(p.title) ? "Yes: " + p.title : "Yes"; }
    if (p.http === false) { return "No answer to HTTP"; }
    return "Not checked yet";
  }
  function accessText(access) {
    return access === "public"
      ? "Public: anyone who can reach portproxy opens it, without signing in."
      : "Private: only signed-in users open it.";
  }
  function link(routeText, href) {
    var li = el("li");
    var a = el("a", null, routeText);
    a.href = new URL(href, document.baseURI).href;
    li.appendChild(a);
    var b = el("button", "copy", "Copy");
    b.type = "button";
    b.setAttribute("aria-label", "Copy the URL " + a.href);
    li.appendChild(b);
    return li;
  }
  function placeholder(p) {
    var d = el("div", "sharing");
    d.appendChild(el("p", "access-note", accessText(p.access)));
    return d;
  }
  function card(p, kept) {
    var li = el("li", "port");
    li.setAttribute("data-port", String(p.port));
    var top = el("div", "top");
    top.appendChild(el("span", "num", p.port));
    if (known(p.process) || known(p.pid)) {
      var proc = el("span", "proc", known(p.process) ? p.process + " " : "");
      if (known(p.pid)) { proc.appendChild(el("span", "pid", "pid " + p.pid)); }
      top.appendChild(proc);
    }
    if (known(p.label)) { top.appendChild(el("span", "label", p.label)); }
    if (p.self) {
      top.appendChild(el("span", "badge self", "this proxy"));
    } else {
      var access = p.access === "public" ? "public" : "private";
      top.appendChild(el("span", "badge " + access, access));
    }
    li.appendChild(top);
    var dl = el("dl", "facts");
    if (!p.self) { fact(dl, "HTTP", httpText(p)); }
    if (known(p.command)) {
      var full = command(p.command);
      var code = el("code", "cmd", full);
      code.title = full;
      code.tabIndex = 0;
      fact(dl, "Command", code);
    }
    fact(dl, "Directory", p.cwd);
    fact(dl, "User", p.user);
    var addresses = (p.addresses || []).map(function (a) {
      var family = FAMILIES[a.family] || a.family;
      return known(family) ? a.address + " (" + family + ")" : a.address;
    });
    fact(dl, "Listens on", addresses.join(", "));
    li.appendChild(dl);
    if (p.warnings && p.warnings.length) {
      var w = el("ul", "warnings");
      p.warnings.forEach(function (text) { w.appendChild(el("li", null, text)); });
      li.appendChild(w);
    }
    if (!p.self) {
      var links = el("ul", "links");
      links.appendChild(link("/proxy/" + p.port + "/", root + "proxy/" + p.port + "/"));
      links.appendChild(
        link("/absproxy/" + p.port + "/", root + "absproxy/" + p.port + "/"));
      if (p.urls && known(p.urls.domain)) {
        links.appendChild(link(p.urls.domain, p.urls.domain));
      }
      li.appendChild(links);
      var sharing = kept || placeholder(p);
      var note = sharing.querySelector(".access-note");
      if (note) { note.textContent = accessText(p.access); }
      sharing.setAttribute("data-port", String(p.port));
      sharing.setAttribute("data-access", p.access === "public" ? "public" : "private");
      li.appendChild(sharing);
    }
    return li;
  }
  function render(entries) {
    var kept = {};
    Array.prototype.forEach.call(list.querySelectorAll(".sharing[data-port]"),
      function (d) { kept[d.getAttribute("data-port")] = d; });
    var items = entries.map(function (p) { return card(p, kept[String(p.port)]); });
    list.replaceChildren.apply(list, items);
    if (empty) { empty.hidden = entries.length > 0; }
    document.dispatchEvent(new CustomEvent("portproxy:ports", {detail: entries}));
  }

  function fallbackCopy(text) {
    var area = el("textarea", "offscreen");
    area.value = text;
    area.setAttribute("readonly", "");
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }
  function copied(button, ok) {
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(function () { button.textContent = "Copy"; }, 1500);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.copy") : null;
    if (!button) { return; }
    var a = button.parentNode.querySelector("a");
    var url = a.href;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(url).then(
        function () { copied(button, true); },
        function () { copied(button, fallbackCopy(url)); });
    } else {
      copied(button, fallbackCopy(url));
    }
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.copy"),
    function (b) {
      b.setAttribute("aria-label", "Copy the URL " + b.parentNode.querySelector("a").href);
      b.hidden = false;
    });

  function state(name, text) {
    live.setAttribute("data-state", name);
    live.textContent = text;
  }
  if (!window.EventSource) { return; }
  var source = new EventSource(events);
  source.addEventListener("ports", function (event) {
    var entries;
    try { entries = JSON.parse(event.data); } catch (e) { return; }
    if (!Array.isArray(entries)) { return; }
    render(entries);
    state("live", "Live: the list follows ports as they open and close.");
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      state("stopped",
        "Live updates stopped: reload the page (you may need to sign in again).");
    } else {
      state("reconnecting", "Live updates interrupted: reconnecting...");
    }
  });
})();
"""


def _known(value: object) -> bool:
    return value is not None and value != ""


def _command(value: object) -> str:
    """A command line as text: an argv list is quoted as a POSIX shell would need it."""
    if isinstance(value, list | tuple):
        return shlex.join(str(part) for part in value)
    return str(value)


def _http_text(entry: PortEntry) -> str:
    if entry.get("http") is True:
        title = entry.get("title")
        return f"Yes: {title}" if _known(title) else "Yes"
    if entry.get("http") is False:
        return "No answer to HTTP"
    return "Not checked yet"


def _access(entry: PortEntry) -> str:
    return "public" if entry.get("access") == "public" else "private"


def default_sharing(entry: PortEntry) -> str:
    """The placeholder's content until the sharing controls fill it: the access level."""
    if _access(entry) == "public":
        text = "Public: anyone who can reach portproxy opens it, without signing in."
    else:
        text = "Private: only signed-in users open it."
    return f'<p class="access-note">{escape(text)}</p>'


def _fact(name: str, value_html: str | None) -> str:
    if value_html is None:
        return ""
    return f"<div><dt>{escape(name)}</dt><dd>{value_html}</dd></div>"


def _text(value: object) -> str | None:
    return escape(str(value)) if _known(value) else None


_FAMILIES = {"ipv4": "IPv4", "ipv6": "IPv6"}


def _address(address: Mapping[str, Any]) -> str:
    """C{127.0.0.1 (IPv4)}: a bind address and its family, as people write them."""
    family = address.get("family")
    family = _FAMILIES.get(str(family), family)
    text = str(address.get("address"))
    return f"{text} ({family})" if _known(family) else text


def _link(text: str, href: str) -> str:
    return (
        f'<li><a href="{escape(href)}">{escape(text)}</a> '
        '<button type="button" class="copy" hidden>Copy</button></li>'
    )


def _card(entry: PortEntry, root: str, sharing: Callable[[PortEntry], str]) -> str:
    """One port's card, the same structure the live script builds."""
    port = int(entry["port"])
    top = [f'<span class="num">{port}</span>']
    process, pid = entry.get("process"), entry.get("pid")
    if _known(process) or _known(pid):
        name = escape(f"{process} ") if _known(process) else ""
        pid_html = f'<span class="pid">pid {escape(str(pid))}</span>' if _known(pid) else ""
        top.append(f'<span class="proc">{name}{pid_html}</span>')
    if _known(entry.get("label")):
        top.append(f'<span class="label">{escape(str(entry["label"]))}</span>')
    is_self = bool(entry.get("self"))
    if is_self:
        top.append('<span class="badge self">this proxy</span>')
    else:
        top.append(f'<span class="badge {_access(entry)}">{_access(entry)}</span>')
    # portproxy is never probed (SPEC 13): its own row has no HTTP line.
    facts = [] if is_self else [_fact("HTTP", escape(_http_text(entry)))]
    if _known(entry.get("command")):
        full = escape(_command(entry["command"]))
        facts.append(
            _fact("Command", f'<code class="cmd" title="{full}" tabindex="0">{full}</code>')
        )
    facts.append(_fact("Directory", _text(entry.get("cwd"))))
    facts.append(_fact("User", _text(entry.get("user"))))
    addresses = [_address(a) for a in entry.get("addresses") or ()]
    facts.append(_fact("Listens on", _text(", ".join(addresses))))
    parts = [
        f'<li class="port" data-port="{port}"><div class="top">{"".join(top)}</div>',
        f'<dl class="facts">{"".join(facts)}</dl>',
    ]
    warnings = entry.get("warnings") or ()
    if warnings:
        items = "".join(f"<li>{escape(str(w))}</li>" for w in warnings)
        parts.append(f'<ul class="warnings">{items}</ul>')
    if not is_self:
        urls = entry.get("urls") or {}
        links = [
            _link(f"/proxy/{port}/", urls.get("proxy") or f"{root}proxy/{port}/"),
            _link(f"/absproxy/{port}/", urls.get("absproxy") or f"{root}absproxy/{port}/"),
        ]
        if _known(urls.get("domain")):
            links.append(_link(str(urls["domain"]), str(urls["domain"])))
        parts.append(f'<ul class="links">{"".join(links)}</ul>')
        parts.append(
            f'<div class="sharing" data-port="{port}" data-access="{_access(entry)}">'
            f"{sharing(entry)}</div>"
        )
    parts.append("</li>")
    return "".join(parts)


def render_home(
    entries: Sequence[PortEntry] | None,
    *,
    csp_nonce: str,
    logout: str = "./logout",
    events: str = "./.portproxy/api/ports/events",
    root: str = "./",
    title: str = "portproxy",
    sharing: Callable[[PortEntry], str] = default_sharing,
    extra_style: str = "",
    extra_script: str = "",
) -> bytes:
    """The start page, UTF-8: one card per port (every value escaped), then the script.

    @param entries: the ports (the API's list, sorted by port), or C{None} when this
        system does not tell which ports listen.
    @param csp_nonce: the nonce of this response's policy (L{content_security_policy}).
    @param logout: the sign-out form's action, C{events} the event stream and C{root}
        portproxy's root, all relative to the page so that they stay under a front
        proxy's path prefix.
    @param sharing: the HTML (escaped by it) put in each port's sharing placeholder.
    """
    nonce = escape(csp_nonce)
    if entries is None:
        empty = "This system does not tell which ports are listening."
    else:
        empty = (
            "No app is listening on a local port yet. Start one (for example "
            "python3 -m http.server 8000) and it shows up here."
        )
    cards = "".join(_card(e, root, sharing) for e in entries or ())
    hidden = " hidden" if entries else ""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>Ports - {escape(title)}</title>\n"
        f'<style nonce="{nonce}">{_STYLE}{extra_style}</style>\n</head>\n<body>\n'
        f"<header><h1>{escape(title)}<small>listening ports</small></h1>"
        f'<form method="post" action="{escape(logout)}"><button type="submit">'
        "Sign out</button></form></header>\n<main>\n"
        '<p class="live" id="live" role="status" data-state="static">'
        "Reload the page to see ports that opened or closed since.</p>\n"
        f'<p class="empty" id="empty"{hidden}>{escape(empty)}</p>\n'
        f'<ul class="ports" id="ports" data-events="{escape(events)}" '
        f'data-root="{escape(root)}">{cards}</ul>\n</main>\n'
        f'<script nonce="{nonce}">{_SCRIPT}{extra_script}</script>\n</body>\n</html>\n'
    )
    return page.encode("utf-8")


class IndexResource(Resource):
    """C{/} on the main host: the start page for a signed-in user.

    Path-route links, the event stream and the sign-out action are relative to the page
    (they survive a front proxy's path prefix); proxy-host links are absolute, from the
    scheme and host the client used (L{portproxy.routing.publicurl}).
    """

    isLeaf = True

    def __init__(
        self,
        *,
        is_signed_in: Callable[[Request], bool],
        deny: Callable[[Request], bytes],
        ports_of: Callable[[Request], list[dict[str, Any]] | None],
        view_of: Callable[[Request], ClientView],
        domains: DomainMatcher,
        sharing: Callable[[PortEntry], str] = default_sharing,
        extra_style: str = "",
        extra_script: str = "",
    ) -> None:
        super().__init__()
        self._is_signed_in = is_signed_in
        self._deny = deny
        self._ports_of = ports_of
        self._view_of = view_of
        self._domains = domains
        # The sharing controls (portproxy.web.sharepanel), given by the instance.
        self._sharing = sharing
        self._extra_style = extra_style
        self._extra_script = extra_script

    def render_GET(self, request: Request) -> bytes:
        if not self._is_signed_in(request):
            return self._deny(request)
        entries = self._ports_of(request)
        view = self._view_of(request)
        base = request_base(view.scheme, view.host)
        here = split_target(origin_form(request.uri))[0]
        if entries is not None:
            # The page's own links are relative to it, whatever form the source used.
            entries = [
                e
                if e.get("self")
                else {
                    **e,
                    "urls": port_urls(
                        int(e["port"]),
                        base,
                        self._domains,
                        relative_to=here,
                        request_host=view.host,
                    ),
                }
                for e in entries
            ]
        nonce = new_nonce()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy", content_security_policy(nonce))
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")

        def relative(path: bytes) -> str:
            return relative_reference(here, path).decode("ascii")

        return render_home(
            entries,
            csp_nonce=nonce,
            logout=relative(b"/logout"),
            events=relative(EVENTS_PATH),
            root=relative(b"/"),
            sharing=self._sharing,
            extra_style=self._extra_style,
            extra_script=self._extra_script,
        )

    render_HEAD = render_GET
