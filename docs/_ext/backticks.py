"""A griffe extension: aiobudget's reST-flavoured docstrings, rendered as Markdown.

The docstrings are written for ``help()`` and for reading in an editor: `Name` in single
backticks names an object, ``code`` in double backticks is code, ``text::`` introduces an
indented example, and one table is a reST simple table. Markdown renders all of that
except the references (plain code, no link), the ``::`` and the table. This extension,
run by mkdocstrings (``extensions:`` in mkdocs.yml) once the package is loaded, rewrites
each docstring for the site only, never the source:

- `Name` becomes a link when it resolves, from the docstring's scope, to an object of
  aiobudget (an *optional* autorefs link: if that object is not rendered on the site
  the name stays plain code, and strict mode has nothing to complain about);
- a trailing ``::`` becomes ``:``;
- a reST simple table (``===  ===`` rules) becomes a Markdown table.

Indented blocks (examples) are fenced as Python, so that they are highlighted, and
otherwise left alone. Private parameters (``_parent``: one leading underscore) are left
out of the signatures shown.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

PACKAGE = "aiobudget"
_REF = re.compile(r"(?<![`\w])`([A-Za-z_][\w.]*)`(?![`\w])")
_RULE = re.compile(r"^=+(?: +=+)+ *$")


class Backticks(griffe.Extension):
    """Rewrite every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name == PACKAGE:
            _visit(pkg, pkg, set())


def _visit(obj: griffe.Object, pkg: griffe.Module, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring is not None:
        obj.docstring.value = rewrite(obj.docstring.value, lambda name: _target(obj, pkg, name))
    if isinstance(obj, griffe.Function):
        for parameter in list(obj.parameters):
            if parameter.name.startswith("_") and not parameter.name.startswith("__"):
                del obj.parameters[parameter.name]
    for member in obj.members.values():
        if not member.is_alias:
            _visit(member, pkg, seen)  # type: ignore[arg-type]


def _target(obj: griffe.Object, pkg: griffe.Module, name: str) -> str | None:
    """The path of the aiobudget object *name* means in *obj*'s docstring, or None."""
    first, _, rest = name.partition(".")
    if first == PACKAGE:
        path = name
    else:
        try:
            path = obj.resolve(first)
        except griffe.NameResolutionError:
            return None
        if rest:
            path = f"{path}.{rest}"
    if path != PACKAGE and not path.startswith(PACKAGE + "."):
        return None
    try:
        found = pkg[path[len(PACKAGE) + 1 :]] if path != PACKAGE else pkg
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return found.path if found is not None else None


def rewrite(text: str, target: Any) -> str:
    """*text* with references linked, ``::`` ended, simple tables converted and
    examples highlighted."""
    lines = _tables(text.split("\n"))
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("    ") and (not out or not out[-1].strip()):
            i = _example(lines, i, out)
            continue
        if line.startswith("|"):
            out.append(line)  # a converted table: leave it
        else:
            text = line[:-1] if line.endswith("::") else line
            out.append(_REF.sub(lambda m: _link(m, target), text))
        i += 1
    return "\n".join(out)


def _example(lines: list[str], start: int, out: list[str]) -> int:
    """Fence the indented example at *start* (so that it is highlighted); return the
    index of the line after it."""
    end = start
    while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
        end += 1
    block = lines[start:end]
    while block and not block[-1].strip():
        block.pop()
    language = "text" if any("\u2500" in line for line in block) else "python"  # a tree
    out.append(f"```{language}")
    out.extend(line[4:] for line in block)
    out.append("```")
    out.extend("" for _ in range(end - start - len(block)))
    return end


def _link(match: re.Match[str], target: Any) -> str:
    name = match[1]
    path = target(name)
    if path is None:
        return match[0]
    return f'<autoref identifier="{path}" optional><code>{name}</code></autoref>'


def _tables(lines: list[str]) -> list[str]:
    """Convert reST simple tables (rule, header, rule, rows..., rule) to Markdown."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _RULE.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        rule = lines[i]
        spans = [m.span() for m in re.finditer(r"=+", rule)]
        rows: list[list[str]] = []
        rules = 1
        i += 1
        while i < len(lines) and rules < 3:  # a simple table has three rules
            line = lines[i]
            i += 1
            if _RULE.match(line):
                rules += 1
                continue
            cells = [_cell(line, start, end, spans, k) for k, (start, end) in enumerate(spans)]
            if rows and not line[: spans[0][1]].strip():
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
            else:
                rows.append(cells)
        header, *body = rows
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(" --- " for _ in header) + "|")
        out.extend("| " + " | ".join(row) + " |" for row in body)
    return out


def _cell(line: str, start: int, end: int, spans: list[tuple[int, int]], k: int) -> str:
    stop = spans[k + 1][0] if k + 1 < len(spans) else len(line)
    return line[start:stop].strip()
