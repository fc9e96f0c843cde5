# -*- test-case-name: tests.test_docs -*-
"""A Sphinx directive that documents C{twist portproxy}'s options from its Options class.

C{.. portproxy-options::} imports L{portproxy.tap.Options} (or the class named as the
directive's argument), reads every flag, parameter and C{opt_*} method the way
C{twisted.python.usage} does, and emits one C{.. option::} entry per option: its
name, a metavar, the default, whether it repeats, and the help text that
C{twist portproxy --help} prints. The reference therefore cannot drift from the code,
and every page can link to an option with C{:option:`--listen`}, with or without a
C{.. program:: twist portproxy} of its own.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROGRAM",
    "OptionEntry",
    "option_entries",
    "render_rst",
    "setup",
]

#: The program name the entries are filed under (C{:option:} targets).
PROGRAM = "twist portproxy"

# How a value is written in the reference. Display only: an option missing here is
# still documented, with VALUE.
_METAVARS = {
    "listen": "ENDPOINT",
    "workers": "N|auto",
    "proxy-domain": "PATTERN",
    "auth": "password|none",
    "access-log": "combined|json|off",
    "password": "PASSWORD",
    "hashed-password": "HASH",
    "password-file": "PATH",
    "abs-proxy-base-path": "PATH",
    "data-dir": "PATH",
    "trusted-origins": "ORIGIN",
    "trusted-proxies": "CIDR",
    "upstream-timeout": "SECONDS",
    "session-ttl": "SECONDS",
    "max-body-size": "SIZE",
    "cookie-suffix": "SUFFIX",
    "print-url": "PORT",
    "cert": "PATH",
    "cert-key": "PATH",
    "cert-host": "HOST",
}

# Characters with a meaning in running reStructuredText text.
_RST_SPECIAL = re.compile(r"([\\`*_|\[\]])")


@dataclass(frozen=True)
class OptionEntry:
    """One command-line option as the reference shows it.

    @ivar name: the long name without dashes (C{listen}).
    @ivar aliases: other long names and single-letter short names for it.
    @ivar takes_value: false for a flag.
    @ivar default: the default shown in C{--help}, or C{None} when there is none.
    @ivar help: the help text, on one line.
    @ivar repeatable: true when each use adds a value (C{--listen}, C{--proxy-domain}).
    """

    name: str
    aliases: tuple[str, ...]
    takes_value: bool
    default: str | None
    help: str
    repeatable: bool

    @property
    def metavar(self) -> str | None:
        """How the value is written (C{ENDPOINT}), or C{None} for a flag."""
        if not self.takes_value:
            return None
        return _METAVARS.get(self.name, "VALUE")


def option_entries(options_class: Callable[[], Any]) -> list[OptionEntry]:
    """Read every option of a C{twisted.python.usage.Options} subclass, sorted by name.

    Uses the tables that C{usage.Options} builds for parsing (C{longOpt}, C{synonyms},
    C{docs}, C{defaults}), so exactly the options that the parser accepts are listed.
    """
    options = options_class()
    takes_value = {o[:-1] for o in options.longOpt if o.endswith("=")}
    names = sorted({o.rstrip("=") for o in options.longOpt})
    entries = []
    for name in names:
        aliases = tuple(
            sorted(
                alias
                for alias, target in options.synonyms.items()
                if target == name and alias != name
            )
        )
        default = None
        if name in takes_value:
            value = options.defaults.get(name)
            if value not in (None, ""):
                default = str(value)
        entries.append(
            OptionEntry(
                name=name,
                aliases=aliases,
                takes_value=name in takes_value,
                default=default,
                help=" ".join(str(options.docs.get(name) or "").split()),
                repeatable=isinstance(options.get(name), list),
            )
        )
    return entries


def _escape(text: str) -> str:
    return _RST_SPECIAL.sub(r"\\\1", text)


def _literal(text: str) -> str:
    if "`" in text or text != text.strip():
        return _escape(text)
    return f"``{text}``"


def _signature(entry: OptionEntry) -> str:
    forms = []
    for name in (entry.name, *entry.aliases):
        dashes = "-" if len(name) == 1 else "--"
        form = dashes + name
        if entry.metavar is not None:
            form += " " + entry.metavar
        forms.append(form)
    return ", ".join(forms)


def render_rst(entries: Sequence[OptionEntry], program: str = PROGRAM) -> list[str]:
    """The reStructuredText for C{entries}: a C{program} and one C{option} each."""
    lines = [f".. program:: {program}", ""]
    for entry in entries:
        lines += [f".. option:: {_signature(entry)}", ""]
        lines.append("   " + (_escape(entry.help) or "(no description)"))
        notes = []
        if entry.repeatable:
            notes.append("Repeatable.")
        if entry.default is not None:
            notes.append(f"Default: {_literal(entry.default)}.")
        if notes:
            lines += ["", "   " + " ".join(notes)]
        lines.append("")
    return lines


def _load(dotted: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def setup(app: Any) -> dict[str, Any]:
    """Register C{.. portproxy-options::} with Sphinx."""
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx import addnodes
    from sphinx.util.docutils import SphinxDirective

    class PortproxyOptionsDirective(SphinxDirective):
        """C{.. portproxy-options:: [module.OptionsClass]}: the options reference."""

        optional_arguments = 1
        has_content = False

        def run(self) -> list[Any]:
            dotted = self.arguments[0] if self.arguments else "portproxy.tap.Options"
            options_class = _load(dotted)
            source = inspect.getsourcefile(options_class)
            if source:
                # Rebuild this page whenever the options change.
                self.env.note_dependency(source)
            lines = render_rst(option_entries(options_class))
            container = nodes.container()
            self.state.nested_parse(
                StringList(lines, source=f"<{dotted}>"), self.content_offset, container
            )
            # Also file each option without a program, so that :option:`--listen` resolves
            # on pages that have no ".. program:: twist portproxy".
            domains = getattr(self.env, "domains", None)  # Sphinx 8.2 and later
            std: Any = domains.standard_domain if domains else self.env.get_domain("std")
            docname = self.env.docname
            for signature in container.findall(addnodes.desc_signature):
                for name in signature.get("allnames", ()):
                    std.add_program_option(None, name, docname, signature["ids"][0])
            return list(container.children)

    app.add_directive("portproxy-options", PortproxyOptionsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
