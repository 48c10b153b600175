"""Readers for the line-oriented text formats: Markdown (Obsidian flavour), reStructuredText, Org,
and plain text. Each keeps headings as the section path and paragraphs as blocks."""

from __future__ import annotations

import datetime
import re
from typing import Callable

import yaml

from skiff.local.readers.base import Block, Document, decode_text, paragraphs

MAX_FRONT_MATTER_CHARS = 65536
MAX_METADATA_VALUE_CHARS = 500


class _SectionWalker:
    """Accumulates paragraphs under a heading stack; fenced regions stay one block."""

    def __init__(self, clean: Callable[[str], str] = lambda s: s) -> None:
        self.blocks: list[Block] = []
        self._stack: list[tuple[int, str]] = []
        self._buffer: list[str] = []
        self._start = 0
        self._verbatim = False
        self._clean = clean

    @property
    def section(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._stack)

    def heading(self, level: int, title: str) -> None:
        self.flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title.strip()))

    def line(self, text: str, line_no: int, verbatim: bool = False) -> None:
        if not text.strip() and not verbatim:
            self.flush()
            return
        if not self._buffer:
            self._start = line_no
            self._verbatim = verbatim
        elif verbatim != self._verbatim:
            self.flush()
            self._start = line_no
            self._verbatim = verbatim
        self._buffer.append(text)

    def flush(self) -> None:
        if self._buffer:
            raw = "\n".join(self._buffer)
            lines = (raw if self._verbatim else self._clean(raw)).split("\n")
            # Blank lines at either end (an unclosed fence's tail, a link that cleans to nothing)
            # are left out of the span too, so it names exactly the lines of the text.
            first, last = 0, len(lines) - 1
            while first <= last and not lines[first].strip():
                first += 1
            while last >= first and not lines[last].strip():
                last -= 1
            text = "\n".join(lines[first : last + 1]).strip()
            if text:
                self.blocks.append(Block(text, self.section, self._start + first, self._start + last))
        self._buffer = []


# -- Markdown --------------------------------------------------------------------------------------

# The closing run of "#"s and blanks is stripped in code: a lazy (.*?) before [ \t#]*$ backtracked
# quadratically, so one "# x" line padded with 20 MB of spaces took hours to read.
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_PRIVATE_LINE = re.compile(r"^[ \t]*[\"']?private[\"']?[ \t]*:[ \t]*[\"']?(?i:true|yes|on|1)[\"']?[ \t\r]*(#.*)?$",
                           re.MULTILINE)
# A link stays on its line (as in Obsidian): one spanning lines took their newlines with it.
_WIKILINK = re.compile(r"!?\[\[([^\[\]|\n]*?)(?:\|([^\[\]\n]*?))?\]\]")
# Blanks only ([ \t], not \s) after the marker: \s ate the newline of a callout without a title,
# gluing its first body line onto it and shifting the line count of the block.
_CALLOUT = re.compile(r"^([ \t]*>[ \t]*)\[!(\w+)\][+-]?[ \t]*", re.MULTILINE)


def _wikilink_text(match: re.Match) -> str:
    target, alias = match.group(1), match.group(2)
    if alias:
        return alias
    # [[Note#Heading]] reads as "Note > Heading"; [[#Heading]] as "Heading".
    return " > ".join(part for part in target.split("#") if part) or target


def clean_markdown(text: str) -> str:
    text = _WIKILINK.sub(_wikilink_text, text)
    return _CALLOUT.sub(lambda m: f"{m.group(1)}{m.group(2).capitalize()}: ", text)


def _text(value) -> str | None:
    """A YAML scalar as text, or None. Why not str(): an int of over 4300 digits makes str() raise
    ValueError (which aborted indexing), and str() of a nested list of YAML aliases (a billion
    laughs) is exponentially long; dates read as text ("2024-05-01"), as written. A boolean is
    text too: `title: true` read as True aborted a whole indexing run where a title was joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, (str, int, float, datetime.date)):
        return None
    try:
        return str(value)[:MAX_METADATA_VALUE_CHARS]
    except ValueError:
        return None


def _scalar(value) -> str | None:
    if isinstance(value, list):
        items = [item for item in map(_text, value[:50]) if item is not None]
        return ", ".join(items)[:MAX_METADATA_VALUE_CHARS] if items else None
    return _text(value)


def _front_matter(lines: list[str], warnings: list[str]) -> tuple[dict, int]:
    """Parse YAML front matter; returns (metadata, number of lines it spans)."""
    if not lines or lines[0].strip() != "---":
        return {}, 0
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        return {}, 0
    raw = "\n".join(lines[1:end])
    if len(raw) > MAX_FRONT_MATTER_CHARS:
        warnings.append("front matter too large; ignored")
        return {}, end + 1
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        warnings.append(f"front matter is not valid YAML ({type(error).__name__}); ignored")
        return {}, end + 1
    except RecursionError:
        # Thousands of nested "[" fit in the size limit; the note's body is still good.
        warnings.append("front matter is nested too deeply; ignored")
        return {}, end + 1
    except (ValueError, TypeError, OverflowError) as error:
        # PyYAML's constructors raise these past its own errors: an int of over 4300 digits, a
        # timestamp like 2024-13-45. They aborted the whole indexing run.
        warnings.append(f"front matter has a value YAML cannot hold ({type(error).__name__}); ignored")
        return {}, end + 1
    if not isinstance(parsed, dict):
        return {}, end + 1
    meta: dict[str, str | bool] = {}
    for key in ("title", "tags", "aliases", "description"):
        value = _scalar(parsed.get(key))
        if value not in (None, ""):
            meta[key] = value
    private = parsed.get("private")
    if (_text(private) or "").strip().lower() in ("true", "yes", "1"):  # YAML's true reads as "true"
        meta["private"] = True
    return meta, end + 1


def read_markdown(data: bytes) -> Document:
    warnings: list[str] = []
    lines = decode_text(data, warnings).split("\n")
    noted = len(warnings)
    metadata, skip = _front_matter(lines, warnings)
    if len(warnings) > noted and _PRIVATE_LINE.search("\n".join(lines[1:skip])):
        metadata["private"] = True  # front matter YAML could not read still says private: fail closed
    walker = _SectionWalker(clean_markdown)
    fence: str | None = None
    first_h1: str | None = None
    for index in range(skip, len(lines)):
        line, line_no = lines[index], index + 1
        fence_match = _FENCE.match(line)
        if fence is not None:
            walker.line(line, line_no, verbatim=True)
            if fence_match and fence_match.group(1)[0] == fence[0] and len(fence_match.group(1)) >= len(fence):
                fence = None
                walker.flush()
            continue
        if fence_match:
            walker.flush()
            fence = fence_match.group(1)
            walker.line(line, line_no, verbatim=True)
            continue
        heading = _ATX_HEADING.match(line)
        if heading:
            title = clean_markdown((heading.group(2) or "").rstrip(" \t#")).strip()
            if len(heading.group(1)) == 1 and first_h1 is None:
                first_h1 = title
            walker.heading(len(heading.group(1)), title)
            continue
        walker.line(line, line_no)
    walker.flush()
    title = metadata.pop("title", None) or first_h1
    return Document("markdown", walker.blocks, title=title, metadata=metadata, warnings=warnings)


# -- reStructuredText ------------------------------------------------------------------------------

_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+<>:._!$%&,;?@\\/|])\1{2,}\s*$")


def read_rst(data: bytes) -> Document:
    warnings: list[str] = []
    lines = decode_text(data, warnings).split("\n")
    walker = _SectionWalker()
    styles: list[tuple[str, bool]] = []  # heading styles in order of first use = their levels
    title: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        overline = bool(_RST_ADORNMENT.match(line)) and index + 2 < len(lines)
        text_index = index + 1 if overline else index
        if text_index + 1 < len(lines):
            text, under = lines[text_index], lines[text_index + 1]
            under_match = _RST_ADORNMENT.match(under)
            if (
                text.strip()
                and not _RST_ADORNMENT.match(text)
                and under_match
                and len(under.rstrip()) >= len(text.rstrip())
                and (not overline or line.strip()[0] == under_match.group(1))
            ):
                style = (under_match.group(1), overline)
                if style not in styles:
                    styles.append(style)
                walker.heading(styles.index(style) + 1, text.strip())
                title = title or text.strip()
                index = text_index + 2
                continue
        walker.line(line, index + 1)
        index += 1
    walker.flush()
    return Document("rst", walker.blocks, title=title, warnings=warnings)


# -- Org -------------------------------------------------------------------------------------------

# Tags (":work:home:") are split off in code: the lazy (.*?) before optional tags and \s*$ was
# quadratic in a long heading line, like the Markdown heading was.
_ORG_HEADING = re.compile(r"^(\*+)\s+(.*)$")
_ORG_TAGS = re.compile(r":[\w@#%:]+:")
_ORG_KEYWORD = re.compile(r"^\s*#\+(\w+):\s*(.*)$")
_ORG_BLOCK = re.compile(r"^\s*#\+(BEGIN|END)_(\w+)", re.IGNORECASE)
_ORG_DRAWER = re.compile(r"^:(PROPERTIES|LOGBOOK):$", re.IGNORECASE)


def _org_title(text: str) -> str:
    """The heading text without its trailing tags."""
    parts = text.rstrip().rsplit(None, 1)
    if len(parts) == 2 and _ORG_TAGS.fullmatch(parts[1]):
        return parts[0]
    return text.strip()


def read_org(data: bytes) -> Document:
    warnings: list[str] = []
    lines = decode_text(data, warnings).split("\n")
    walker = _SectionWalker(clean_markdown)  # Org links [[target][text]] are rare enough; keep text
    title: str | None = None
    metadata: dict[str, str | bool] = {}
    in_block = False
    in_drawer = False
    # A drawer without its :END: is no drawer (as in Org itself): it used to hide the rest of the
    # file, so one missing line lost every paragraph after it.
    last_end = max((i for i, text in enumerate(lines) if text.strip().upper() == ":END:"), default=-1)
    for index, line in enumerate(lines):
        line_no = index + 1
        block = _ORG_BLOCK.match(line)
        if block:
            in_block = block.group(1).upper() == "BEGIN"
            walker.line(line, line_no, verbatim=True)
            if not in_block:
                walker.flush()
            continue
        if in_block:
            walker.line(line, line_no, verbatim=True)
            continue
        stripped = line.strip()
        # Drawers and keyword lines end the paragraph before them: a paragraph resumed after one
        # counted its lines as if they were adjacent, so its line span was short.
        if index < last_end and _ORG_DRAWER.match(stripped):
            walker.flush()
            in_drawer = True
            continue
        if in_drawer:
            in_drawer = stripped.upper() != ":END:"
            continue
        keyword = _ORG_KEYWORD.match(line)
        if keyword:
            walker.flush()
            key, value = keyword.group(1).upper(), keyword.group(2).strip()
            if key == "TITLE":
                title = value
            elif key == "FILETAGS":
                metadata["tags"] = ", ".join(t for t in value.split(":") if t)
            continue
        heading = _ORG_HEADING.match(line)
        if heading:
            walker.heading(len(heading.group(1)), _org_title(heading.group(2)))
            continue
        walker.line(line, line_no)
    walker.flush()
    return Document("org", walker.blocks, title=title, metadata=metadata, warnings=warnings)


# -- plain text ------------------------------------------------------------------------------------


def read_plain_text(data: bytes) -> Document:
    warnings: list[str] = []
    lines = decode_text(data, warnings).split("\n")
    return Document("text", list(paragraphs(lines, 1, ())), warnings=warnings)
