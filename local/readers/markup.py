"""Readers for the line-oriented text formats: Markdown (Obsidian flavour), reStructuredText, Org,
and plain text. Each keeps headings as the section path and paragraphs as blocks."""

from __future__ import annotations

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
            text = (raw if self._verbatim else self._clean(raw)).strip()
            if text:
                end = self._start + len(self._buffer) - 1
                self.blocks.append(Block(text, self.section, self._start, end))
        self._buffer = []


# -- Markdown --------------------------------------------------------------------------------------

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_PRIVATE_LINE = re.compile(r"^[ \t]*[\"']?private[\"']?[ \t]*:[ \t]*[\"']?(?i:true|yes|on|1)[\"']?[ \t\r]*(#.*)?$",
                           re.MULTILINE)
_WIKILINK = re.compile(r"!?\[\[([^\[\]|]*?)(?:\|([^\[\]]*?))?\]\]")
_CALLOUT = re.compile(r"^(\s*>\s*)\[!(\w+)\][+-]?\s*", re.MULTILINE)


def _wikilink_text(match: re.Match) -> str:
    target, alias = match.group(1), match.group(2)
    if alias:
        return alias
    # [[Note#Heading]] reads as "Note > Heading"; [[#Heading]] as "Heading".
    return " > ".join(part for part in target.split("#") if part) or target


def clean_markdown(text: str) -> str:
    text = _WIKILINK.sub(_wikilink_text, text)
    return _CALLOUT.sub(lambda m: f"{m.group(1)}{m.group(2).capitalize()}: ", text)


def _scalar(value) -> str | bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int, float)):
        return str(value)[:MAX_METADATA_VALUE_CHARS]
    if isinstance(value, list):
        items = [str(v) for v in value[:50] if isinstance(v, (str, int, float))]
        return ", ".join(items)[:MAX_METADATA_VALUE_CHARS] if items else None
    return None


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
    if not isinstance(parsed, dict):
        return {}, end + 1
    meta: dict[str, str | bool] = {}
    for key in ("title", "tags", "aliases", "description"):
        value = _scalar(parsed.get(key))
        if value not in (None, ""):
            meta[key] = value
    private = parsed.get("private")
    if private is True or str(private).strip().lower() in ("true", "yes", "1"):
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
            title = clean_markdown(heading.group(2) or "").strip()
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

_ORG_HEADING = re.compile(r"^(\*+)\s+(.*?)(?:\s+:[\w@#%:]+:)?\s*$")
_ORG_KEYWORD = re.compile(r"^\s*#\+(\w+):\s*(.*)$")
_ORG_BLOCK = re.compile(r"^\s*#\+(BEGIN|END)_(\w+)", re.IGNORECASE)
_ORG_DRAWER = re.compile(r"^:(PROPERTIES|LOGBOOK):$", re.IGNORECASE)


def read_org(data: bytes) -> Document:
    warnings: list[str] = []
    lines = decode_text(data, warnings).split("\n")
    walker = _SectionWalker(clean_markdown)  # Org links [[target][text]] are rare enough; keep text
    title: str | None = None
    metadata: dict[str, str | bool] = {}
    in_block = False
    in_drawer = False
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
        if _ORG_DRAWER.match(stripped):
            in_drawer = True
            continue
        if in_drawer:
            in_drawer = stripped.upper() != ":END:"
            continue
        keyword = _ORG_KEYWORD.match(line)
        if keyword:
            key, value = keyword.group(1).upper(), keyword.group(2).strip()
            if key == "TITLE":
                title = value
            elif key == "FILETAGS":
                metadata["tags"] = ", ".join(t for t in value.split(":") if t)
            continue
        heading = _ORG_HEADING.match(line)
        if heading:
            walker.heading(len(heading.group(1)), heading.group(2))
            continue
        walker.line(line, line_no)
    walker.flush()
    return Document("org", walker.blocks, title=title, metadata=metadata, warnings=warnings)


# -- plain text ------------------------------------------------------------------------------------


def read_plain_text(data: bytes) -> Document:
    warnings: list[str] = []
    lines = decode_text(data, warnings).split("\n")
    return Document("text", list(paragraphs(lines, 1, ())), warnings=warnings)
