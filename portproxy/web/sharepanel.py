# -*- test-case-name: tests.test_sharing_api -*-
"""The home page's sharing controls, one panel per port (SPEC 12).

The page (L{portproxy.web.home}, whose module docstring holds the contract) renders
L{render_panel} into each port's C{<div class="sharing" data-port="..."
data-access="...">}: the port's access level, readable without JavaScript.
L{PANEL_SCRIPT}, included once under the page's CSP nonce, turns each panel into
controls: the public/private toggle, the label, "create share link" (path, methods,
lifetime) and "create token" (name, lifetime), each secret shown once with a copy
button, and the port's active links and tokens with revoke buttons. It fills new
placeholders on the page's C{portproxy:ports} event and keeps the panels it made (the
page keeps their nodes). The script builds every node with DOM methods and sets text
with C{textContent} (never C{innerHTML} with data), and calls the API with relative
URLs (C{./.portproxy/api/...}, so a front proxy's path prefix stays) and C{Content-Type:
application/json}, which the API requires of state changes.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

__all__ = ["PANEL_CSS", "PANEL_SCRIPT", "render_panel"]


def render_panel(entry: Mapping[str, Any]) -> str:
    """The server-rendered inside of a port's sharing placeholder: its access level
    (readable without JavaScript), escaped; the script adds the controls after it.

    The words are the home page's own (its live updates rewrite the note with them).
    """
    if entry.get("access") == "public":
        text = "Public: anyone who can reach portproxy opens it, without signing in."
    else:
        text = "Private: only signed-in users open it."
    return f'<p class="access-note">{html.escape(text)}</p>'


#: Styles of the panels, for the page's own C{<style>}.
PANEL_CSS = (
    ".share-controls form{display:flex;flex-wrap:wrap;gap:.3rem;margin:.4rem 0}"
    ".share-controls input[type=text]{width:9rem}"
    ".share-controls .link{width:100%;max-width:36rem;font-family:monospace}"
    ".share-controls ul{margin:.3rem 0;padding-left:1.2rem}"
    ".share-controls .error{color:#cf222e}"
)

#: The controls (plain JavaScript, no library), appended to the page's nonce'd script.
PANEL_SCRIPT = r"""
(function () {
  "use strict";
  var API = "./.portproxy/api/";
  var LIFETIMES = [["1 hour", 3600], ["2 hours", 7200], ["1 day", 86400],
                   ["7 days", 604800], ["30 days", 2592000]];
  var NOTES = {
    "public": "Public: anyone who can reach portproxy opens it, without signing in.",
    "private": "Private: only signed-in users open it."
  };
  var lists = {shares: [], tokens: []};
  var panels = [];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") { node.textContent = attrs[name]; }
      else { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function call(method, path, body) {
    var init = {method: method, credentials: "same-origin", headers: {}};
    if (method !== "GET") {
      // The API refuses a state change without it (a cross-site form cannot send it).
      init.headers["Content-Type"] = "application/json";
    }
    if (body !== undefined) { init.body = JSON.stringify(body); }
    return fetch(API + path, init).then(function (response) {
      if (response.status === 204) { return null; }
      return response.json().then(function (payload) {
        if (!response.ok) { throw new Error(payload.error || response.statusText); }
        return payload;
      });
    });
  }

  function when(seconds) {
    return seconds === null ? "never" : new Date(seconds * 1000).toLocaleString();
  }

  function copyButton(input) {
    var button = el("button", {type: "button", "class": "copy-link", text: "Copy"});
    button.addEventListener("click", function () {
      input.select();
      var done = function () { button.textContent = "Copied"; };
      var fallback = function () { document.execCommand("copy"); done(); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, fallback);
      } else { fallback(); }
    });
    return button;
  }

  function Panel(root) {
    this.root = root;
    this.port = parseInt(root.getAttribute("data-port"), 10);
    this.message = el("span", {"class": "error", role: "status"});
    this.toggle = el("button", {type: "button", "class": "toggle"});
    this.created = el("div", {"class": "created"});
    this.list = el("ul", {"class": "grants"});
    root.setAttribute("data-panel", "1");
    this.build();
    this.update();
  }

  Panel.prototype.access = function () {
    return this.root.getAttribute("data-access") === "public" ? "public" : "private";
  };

  Panel.prototype.fail = function (error) {
    this.message.textContent = String(error.message || error);
  };

  Panel.prototype.update = function () {
    this.toggle.textContent = this.access() === "public" ? "Make private" : "Make public";
  };

  Panel.prototype.build = function () {
    var self = this;
    self.toggle.addEventListener("click", function () {
      var next = self.access() === "public" ? "private" : "public";
      call("PATCH", "ports/" + self.port, {access: next}).then(function (port) {
        self.root.setAttribute("data-access", port.access);
        var note = self.root.querySelector(".access-note");
        if (note) { note.textContent = NOTES[port.access]; }
        self.message.textContent = "";
        self.update();
      }, function (e) { self.fail(e); });
    });
    var label = el("input", {type: "text", name: "label", maxlength: "64",
                             placeholder: "label", "aria-label": "label"});
    var labelForm = el("form", {"class": "label-form"},
                       [label, el("button", {text: "Set label"})]);
    labelForm.addEventListener("submit", function (event) {
      event.preventDefault();
      call("PATCH", "ports/" + self.port, {label: label.value}).then(function () {
        self.message.textContent = "";
      }, function (e) { self.fail(e); });
    });
    var path = el("input", {type: "text", name: "path", value: "/", "aria-label": "path"});
    var methods = el("select", {name: "methods", "aria-label": "methods"}, [
      el("option", {value: "", text: "all methods"}),
      el("option", {value: "GET", text: "GET, HEAD (read only, no WebSockets)"}),
      el("option", {value: "POST", text: "POST (webhook)"})
    ]);
    var lifetime = el("select", {name: "ttl", "aria-label": "lifetime"});
    LIFETIMES.forEach(function (item) {
      var option = el("option", {value: String(item[1]), text: item[0]});
      option.selected = item[1] === 86400;
      lifetime.appendChild(option);
    });
    var shareForm = el("form", {"class": "share-form"},
      [path, methods, lifetime, el("button", {text: "Create share link"})]);
    shareForm.addEventListener("submit", function (event) {
      event.preventDefault();
      call("POST", "shares", {
        port: self.port,
        path: path.value || "/",
        methods: methods.value ? [methods.value] : null,
        ttl: parseInt(lifetime.value, 10)
      }).then(function (share) {
        self.showOnce("Share link (shown once): ", share.url, "share link");
        lists.shares.push(share);
        renderAll();
      }, function (e) { self.fail(e); });
    });
    var name = el("input", {type: "text", name: "name", maxlength: "64",
                            placeholder: "token name", "aria-label": "token name"});
    var expiry = el("select", {name: "token-ttl", "aria-label": "token lifetime"},
      [el("option", {value: "", text: "no expiry"})]);
    LIFETIMES.forEach(function (item) {
      expiry.appendChild(el("option", {value: String(item[1]), text: item[0]}));
    });
    var tokenForm = el("form", {"class": "token-form"},
      [name, expiry, el("button", {text: "Create token"})]);
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      call("POST", "tokens", {
        name: name.value,
        ports: [self.port],
        ttl: expiry.value ? parseInt(expiry.value, 10) : null
      }).then(function (token) {
        self.showOnce("Token (shown once): ", token.token, "token");
        delete token.token;  // never kept in the page once shown
        lists.tokens.push(token);
        renderAll();
      }, function (e) { self.fail(e); });
    });
    var controls = el("div", {"class": "share-controls"}, [
      el("div", {}, [self.toggle, " ", self.message]),
      labelForm, shareForm, tokenForm, self.created, self.list
    ]);
    self.root.appendChild(controls);
  };

  Panel.prototype.showOnce = function (text, value, what) {
    var box = el("input", {type: "text", readonly: "readonly", "class": "link",
                           "aria-label": what});
    box.value = value;
    clear(this.created);
    this.created.appendChild(el("span", {text: text}));
    this.created.appendChild(box);
    this.created.appendChild(copyButton(box));
    this.message.textContent = "";
  };

  Panel.prototype.render = function () {
    var self = this;
    clear(self.list);
    function revoke(kind, item) {
      var button = el("button", {type: "button", "class": "revoke", text: "Revoke"});
      button.addEventListener("click", function () {
        call("DELETE", kind + "/" + encodeURIComponent(item.id)).then(function () {
          lists[kind] = lists[kind].filter(function (x) { return x.id !== item.id; });
          renderAll();
        }, function (e) { self.fail(e); });
      });
      return button;
    }
    lists.shares.forEach(function (s) {
      if (s.port !== self.port) { return; }
      var scope = s.methods ? s.methods.join(", ") : "all methods";
      var text = "Link to " + s.path + " (" + scope + ") until " + when(s.expires) + " ";
      self.list.appendChild(el("li", {"class": "share"}, [text, revoke("shares", s)]));
    });
    lists.tokens.forEach(function (t) {
      if (t.ports.indexOf(self.port) < 0) { return; }
      var text = "Token " + t.name + " for " + t.path + ", last used " +
                 when(t.last_used) + " ";
      self.list.appendChild(el("li", {"class": "token"}, [text, revoke("tokens", t)]));
    });
  };

  function renderAll() { panels.forEach(function (panel) { panel.render(); }); }

  function attach() {
    var roots = document.querySelectorAll("div.sharing[data-port]");
    Array.prototype.forEach.call(roots, function (root) {
      if (root.getAttribute("data-panel")) { return; }
      panels.push(new Panel(root));
    });
    panels = panels.filter(function (panel) { return document.contains(panel.root); });
    panels.forEach(function (panel) { panel.update(); });
    renderAll();
  }

  function start() {
    attach();
    document.addEventListener("portproxy:ports", attach);
    Promise.all([call("GET", "shares"), call("GET", "tokens")]).then(function (got) {
      lists.shares = got[0];
      lists.tokens = got[1];
      renderAll();
    }, function (e) { panels.forEach(function (panel) { panel.fail(e); }); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else { start(); }
})();
"""
