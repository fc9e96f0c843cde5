"""Generate the benchmark page: one index.html and a graph of ES modules, as Vite serves.

The HTML loads a few entry modules; every other module is reached only through a chain of
`import` statements, so a client discovers the page level by level, one round trip per
level, as a browser does. Module sources are synthesised from a vocabulary of real
JavaScript identifiers, keywords and comment words with a fixed seed, so the text compresses
about as well as real dev-server source (gzip 3-5x), not like repeated filler. Same seed,
same bytes.

Usage: python genpage.py OUT_DIR [--modules 300] [--seed 14]
Writes OUT_DIR/index.html, OUT_DIR/src/**.js and OUT_DIR/manifest.json (path: sha256, size).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import posixpath
import random
from dataclasses import dataclass, field
from pathlib import Path

MIN_SIZE = 5 * 1024
MAX_SIZE = 50 * 1024

FOLDERS = ["components", "stores", "utils", "views", "lib", "hooks", "services", "api"]

NOUNS = (
    "user session token account profile editor panel sidebar toolbar button dialog modal "
    "table row column cell grid list item entry record query filter sort page route router "
    "view layout theme color style state store action reducer selector effect event "
    "handler "
    "listener callback promise request response header body payload cache buffer stream "
    "socket channel message queue worker task job timer interval frame node element tree "
    "document window location history storage cookie locale format date time number string "
    "value key index offset limit cursor range selection position size width height margin "
    "padding border shadow icon image file path url host port origin config option setting "
    "feature flag version schema model field form input label error warning status result "
    "context provider consumer component props children ref hook memo signal observer "
    "subscription dispatcher emitter registry factory builder parser serializer validator "
    "formatter loader resolver transformer adapter client server service module bundle "
    "chunk"
).split()

VERBS = (
    "get set create update delete remove add insert find load save fetch parse format "
    "render "
    "mount unmount handle resolve reject validate normalize serialize compute build apply "
    "merge split join map filter reduce sort group select toggle open close show hide "
    "enable disable register unregister subscribe unsubscribe emit dispatch notify "
    "schedule "
    "cancel retry flush reset clear init start stop attach detach bind wrap unwrap encode "
    "decode compare measure track log warn assert ensure collect prepare restore"
).split()

ADJECTIVES = (
    "active current default initial pending visible hidden selected focused dirty stale "
    "cached remote local global shared internal external primary secondary next previous "
    "last first empty partial full valid invalid safe raw parsed resolved async lazy"
).split()

GLOBALS = [
    "Object.keys",
    "Object.assign",
    "Object.entries",
    "Object.freeze",
    "Array.isArray",
    "Array.from",
    "JSON.stringify",
    "JSON.parse",
    "Math.max",
    "Math.min",
    "Math.round",
    "Math.floor",
    "Number.isFinite",
    "Promise.all",
    "Promise.resolve",
    "Symbol.for",
    "document.createElement",
    "document.querySelector",
    "window.addEventListener",
    "window.requestAnimationFrame",
    "console.warn",
    "console.error",
    "structuredClone",
    "queueMicrotask",
    "setTimeout",
    "clearTimeout",
    "encodeURIComponent",
    "new URL",
    "new Map",
    "new Set",
    "new WeakMap",
    "new AbortController",
    "fetch",
]

COMMENT_WORDS = (
    "the this that when if we it is are be to of and or for in on with without before "
    "after "
    "because so only once each every all none not yet still also otherwise until unless "
    "returns keeps makes sure calls runs uses reads writes checks skips waits falls back "
    "browser server user caller value list item state cache request response event handler "
    "note todo fixme workaround legacy older newer versions safari firefox chrome edge "
    "case cases edge empty missing invalid stale pending later first last next previous"
).split()

PARAM_TYPES = ["string", "number", "object", "boolean", "Array<string>", "Promise<void>"]
RETURN_TYPES = ["void", "string", "object", "Promise<object>"]
OPERATORS = ["+", "-", "*", "===", "!==", "&&", "||"]

STRINGS = (
    "loading ready error idle success failed cancelled submit reset close open save "
    "application/json text/plain content-type authorization accept click change input "
    "keydown keyup focus blur resize scroll visibilitychange popstate hashchange"
).split()


def camel(rng: random.Random, parts: list[list[str]]) -> str:
    """A camelCase name built from one word of each list."""
    words = [rng.choice(p) for p in parts]
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def unique(name: str, taken: set[str]) -> str:
    """NAME, or NAME with a number, so that it is not in TAKEN; the result joins TAKEN."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    taken.add(candidate)
    return candidate


def pascal(rng: random.Random, parts: list[list[str]]) -> str:
    name = camel(rng, parts)
    return name[:1].upper() + name[1:]


@dataclass
class Module:
    """One generated module: where it lives, what it imports and what it exports."""

    index: int
    path: str
    level: int
    size: int
    exports: list[str] = field(default_factory=list)
    imports: list[int] = field(default_factory=list)


class Writer:
    """Synthesises plausible JavaScript source text from the vocabularies."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        # A real module keeps reusing its own few dozen names; that reuse is most of why
        # source text compresses 3-5x.
        self.local = [self.fresh() for _ in range(rng.randint(25, 45))]

    def ident(self) -> str:
        if self.rng.random() < 0.75:
            return self.rng.choice(self.local)
        return self.fresh()

    def fresh(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return camel(self.rng, [VERBS, NOUNS])
        if r < 0.7:
            return camel(self.rng, [ADJECTIVES, NOUNS])
        return self.rng.choice(NOUNS)

    def comment(self, words: int) -> str:
        text = " ".join(self.rng.choice(COMMENT_WORDS) for _ in range(words))
        return text[:1].upper() + text[1:] + "."

    def literal(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return repr(self.rng.choice(STRINGS)).replace("'", '"')
        if r < 0.5:
            return str(self.rng.randint(0, 5000))
        if r < 0.6:
            return self.rng.choice(["true", "false", "null", "undefined"])
        if r < 0.75:
            return f"`${{{self.ident()}}}/{self.rng.choice(NOUNS)}/${{{self.ident()}}}`"
        if r < 0.85:
            return f"{self.rng.randint(0, 99)}.{self.rng.randint(0, 999)}"
        return f"{self.ident()}.{self.ident()}"

    def expr(self, names: list[str]) -> str:
        r = self.rng.random()
        a = self.rng.choice(names) if names else self.ident()
        if r < 0.2:
            return f"{a}.{self.ident()}"
        if r < 0.35:
            return f"{self.rng.choice(GLOBALS)}({a})"
        if r < 0.5:
            item, other = self.rng.choice(NOUNS), self.rng.choice(NOUNS)
            return f"{a}.map(({item}) => {other}.{self.ident()})"
        if r < 0.6:
            return f"{a}?.{self.ident()} ?? {self.literal()}"
        if r < 0.7:
            return f"{a} {self.rng.choice(OPERATORS)} {self.literal()}"
        if r < 0.8:
            return f"{self.ident()}({a}, {self.literal()})"
        if r < 0.9:
            return f"{{ {self.ident()}: {a}, {self.ident()}: {self.literal()} }}"
        return self.literal()

    def statement(self, names: list[str], declared: set[str], indent: str) -> list[str]:
        """One statement; DECLARED holds the names the block declares already (no clash)."""
        r = self.rng.random()
        if r < 0.35:
            name = unique(self.ident(), declared)
            keyword = self.rng.choice(["const", "const", "let"])
            line = f"{indent}{keyword} {name} = {self.expr(names)};"
            names.append(name)
            return [line]
        if r < 0.5:
            body = self.statement(list(names), set(), indent + "  ")
            cond = self.expr(names)
            lines = [f"{indent}if ({cond}) {{", *body]
            if self.rng.random() < 0.4:
                lines += [f"{indent}}} else {{", f"{indent}  return {self.expr(names)};"]
            return [*lines, f"{indent}}}"]
        if r < 0.6:
            item = self.rng.choice(NOUNS)
            return [
                f"{indent}for (const {item} of {self.expr(names)}) {{",
                f"{indent}  {self.ident()}({item}, {self.literal()});",
                f"{indent}}}",
            ]
        if r < 0.7:
            return [f"{indent}// {self.comment(self.rng.randint(5, 14))}"]
        if r < 0.8:
            owner = names[0] if names else "this"
            return [
                f"{indent}try {{",
                f"{indent}  {owner}.{self.ident()}({self.literal()});",
                f"{indent}}} catch (error) {{",
                f'{indent}  console.warn("{self.ident()} failed", error);',
                f"{indent}}}",
            ]
        if r < 0.9:
            owner = self.rng.choice(names) if names else "this"
            return [f"{indent}{owner}.{self.ident()} = {self.expr(names)};"]
        return [f"{indent}return {self.expr(names)};"]

    def jsdoc(self, params: list[str]) -> list[str]:
        lines = ["/**", f" * {self.comment(self.rng.randint(6, 18))}"]
        if self.rng.random() < 0.5:
            lines.append(f" * {self.comment(self.rng.randint(6, 18))}")
        for p in params:
            kind = self.rng.choice(PARAM_TYPES)
            lines.append(f" * @param {{{kind}}} {p}")
        lines.append(f" * @returns {{{self.rng.choice(RETURN_TYPES)}}}")
        return [*lines, " */"]

    def function(self, name: str, imported: list[str], exported: bool = False) -> list[str]:
        params = [self.rng.choice(NOUNS) for _ in range(self.rng.randint(0, 3))]
        params = list(dict.fromkeys(params))
        names = params + imported
        head = "export " if exported or self.rng.random() < 0.8 else ""
        kw = "async function" if self.rng.random() < 0.3 else "function"
        lines = [*self.jsdoc(params), f"{head}{kw} {name}({', '.join(params)}) {{"]
        declared = set(params)
        for _ in range(self.rng.randint(3, 12)):
            lines += self.statement(names, declared, "  ")
        return [*lines, "}", ""]

    def klass(self, name: str, imported: list[str]) -> list[str]:
        base = self.rng.choice(imported) if imported and self.rng.random() < 0.3 else None
        ext = f" extends {base}" if base else ""
        lines = [*self.jsdoc([]), f"export class {name}{ext} {{"]
        fields = [self.ident() for _ in range(self.rng.randint(1, 4))]
        lines.append("  constructor(options = {}) {")
        if base:
            lines.append("    super(options);")
        for f in fields:
            lines.append(f"    this.{f} = options.{f} ?? {self.literal()};")
        lines.append("  }")
        for _ in range(self.rng.randint(1, 4)):
            method = self.ident()
            lines.append("")
            param = self.rng.choice(NOUNS)
            lines.append(f"  {method}({param}) {{")
            names = ["this", *imported]
            declared = {param}
            for _ in range(self.rng.randint(2, 7)):
                lines += self.statement(names, declared, "    ")
            lines.append("  }")
        return [*lines, "}", ""]

    def table(self, name: str) -> list[str]:
        lines = [f"export const {name} = Object.freeze({{"]
        for _ in range(self.rng.randint(4, 16)):
            lines.append(f"  {self.ident()}: {self.literal()},")
        return [*lines, "});", ""]


def build_graph(rng: random.Random, count: int) -> list[Module]:
    """Place COUNT modules on levels; each one below the entries is imported by one above.

    Level sizes grow then shrink (3, 9, 27, ...), so the page takes several discovery round
    trips, and later modules also import a few already placed ones, like shared utilities.
    """
    levels: list[int] = []
    remaining, width = count, 3
    while remaining > 0:
        n = min(width, remaining)
        levels.append(n)
        remaining -= n
        width = min(width * 3, 90)
    modules: list[Module] = []
    used: set[str] = set()
    for level, n in enumerate(levels):
        for _ in range(n):
            index = len(modules)
            if index == 0:
                path = "src/main.js"
            else:
                folder = "src" if level == 0 else "src/" + rng.choice(FOLDERS)
                while True:
                    name = (
                        camel(rng, [NOUNS, NOUNS])
                        if rng.random() < 0.5
                        else pascal(rng, [ADJECTIVES, NOUNS])
                    )
                    path = f"{folder}/{name}.js"
                    if path not in used:
                        break
            used.add(path)
            # Log-uniform like real module sizes; blocks overshoot a bit, hence the margin.
            low, high = math.log(MIN_SIZE), math.log(MAX_SIZE - 3 * 1024)
            size = int(math.exp(rng.uniform(low, high)))
            modules.append(Module(index, path, level, size))
    by_level: dict[int, list[Module]] = {}
    for m in modules:
        by_level.setdefault(m.level, []).append(m)
    for m in modules:
        if m.level > 0:
            rng.choice(by_level[m.level - 1]).imports.append(m.index)
    for m in modules:
        deeper = [
            o.index for o in modules if o.level > m.level and o.index not in m.imports
        ]
        for _ in range(rng.randint(0, 2)):
            if deeper:
                m.imports.append(rng.choice(deeper))
    return modules


def render_module(rng: random.Random, module: Module, modules: list[Module]) -> str:
    """The source of MODULE: its imports, then functions, classes and tables to its size."""
    writer = Writer(rng)
    lines = [f"// {module.path}: {writer.comment(rng.randint(6, 12))}"]
    imported: list[str] = []
    # Exports first: importers already refer to them by these names.
    top: set[str] = set(module.exports)
    here = posixpath.dirname(module.path)
    seen: set[str] = set()
    for target_index in module.imports:
        target = modules[target_index]
        spec = posixpath.relpath(target.path, here)
        if not spec.startswith("."):
            spec = "./" + spec
        if spec in seen:
            continue
        seen.add(spec)
        bindings = []
        for name in target.exports[: rng.randint(1, 3)]:
            local = unique(name, top)
            imported.append(local)
            bindings.append(name if local == name else f"{name} as {local}")
        lines.append(f'import {{ {", ".join(bindings)} }} from "{spec}";')
    lines.append("")
    text = "\n".join(lines)
    chunks: list[str] = [text]
    length = len(text.encode())
    pending = list(module.exports)
    while length < module.size or pending:
        export = pending.pop(0) if pending else None
        r = rng.random()
        if export is not None:
            # An exported name must be defined under exactly that name.
            block = (
                writer.function(export, imported, exported=True)
                if r < 0.8
                else writer.table(export)
            )
        elif r < 0.55:
            block = writer.function(unique(writer.ident(), top), imported)
        elif r < 0.85:
            block = writer.klass(unique(pascal(rng, [ADJECTIVES, NOUNS]), top), imported)
        else:
            block = writer.table(unique(writer.ident().upper(), top))
        chunk = "\n".join(block) + "\n"
        chunks.append(chunk)
        length += len(chunk.encode())
    return "".join(chunks)


def render_html(modules: list[Module]) -> str:
    entries = [m for m in modules if m.level == 0]
    scripts = "\n".join(
        f'    <script type="module" src="./{m.path}"></script>' for m in entries
    )
    return (
        '<!doctype html>\n<html lang="en">\n  <head>\n    <meta charset="UTF-8" />\n'
        '    <meta name="viewport" content="width=device-width, initial-scale=1.0" />\n'
        "    <title>pageload benchmark</title>\n"
        f'{scripts}\n  </head>\n  <body>\n    <div id="app"></div>\n  </body>\n</html>\n'
    )


def generate(out: Path, count: int = 300, seed: int = 14) -> dict[str, dict[str, object]]:
    """Write the page under OUT and return its manifest (path -> sha256 and size)."""
    rng = random.Random(seed)
    modules = build_graph(rng, count)
    for m in modules:
        # Export names come first: importers name them before their module is rendered.
        m.exports = list(dict.fromkeys(camel(rng, [VERBS, NOUNS]) for _ in range(4)))
    files: dict[str, bytes] = {"index.html": render_html(modules).encode()}
    for m in modules:
        # Checked by the level invariant in build_graph; modules are rendered in any order.
        files[m.path] = render_module(rng, m, modules).encode()
    manifest: dict[str, dict[str, object]] = {}
    for path, data in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        manifest[path] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    levels = max(m.level for m in modules) + 1
    (out / "manifest.json").write_text(
        json.dumps(
            {"seed": seed, "modules": count, "levels": levels, "files": manifest}, indent=1
        )
    )
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--modules", type=int, default=300)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    manifest = generate(args.out, args.modules, args.seed)
    raw = b"".join((args.out / p).read_bytes() for p in manifest)
    total = sum(int(str(v["size"])) for v in manifest.values())
    per_file = sum(len(gzip.compress((args.out / p).read_bytes(), 6)) for p in manifest)
    whole = len(raw) / len(gzip.compress(raw, 6))
    print(
        f"{len(manifest)} files, {total / 1024:.0f} KiB, gzip per file "
        f"{per_file / 1024:.0f} KiB (ratio {total / per_file:.2f}x; "
        f"whole page {whole:.2f}x)"
    )


if __name__ == "__main__":
    main()
