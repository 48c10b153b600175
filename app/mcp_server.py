"""`skiff mcp`: skiff's notes and answers as MCP tools, over stdio, for agents (the official `mcp` SDK).

- `search_notes(query, k)`: the chunks skiff's retrieval chooses for a query (as `skiff ask`
  would give its model), with file, section and lines. Private notes are included: the answer
  goes to the agent on this machine, over a pipe. Whether the agent then sends them anywhere is
  the agent's business; the tool says which chunks are private so it can tell.
- `ask(question, route)`: skiff's whole answer (notes, router, draft check, fallbacks), recorded
  like a CLI answer; private notes never go to the cloud, as everywhere in skiff.
- Each indexed folder is a resource listing its indexed files.

stdout carries the protocol, so nothing else may print there: skiff's own messages go to stderr.
"""

from __future__ import annotations

import json
from typing import Literal

import anyio
from pydantic import BaseModel, Field

from skiff.app.common import assistant_session

MAX_K = 50


class NoteChunk(BaseModel):
    file: str
    title: str
    section: str
    line_start: int
    line_end: int
    page: int | None = None
    private: bool = False
    score: float = Field(description="cosine similarity to the query")
    text: str


class Source(BaseModel):
    number: int = Field(description="the [n] the answer cites")
    file: str
    section: str
    line_start: int
    line_end: int


class AskResult(BaseModel):
    answer: str
    answer_id: str = Field(description="for `skiff feedback good|bad ID`")
    answered_by: str = Field(description="local or cloud")
    route: str
    reason: str = Field(description="why the router sent it there")
    sources: list[Source]
    notices: list[str]


def build_server(assistant):
    """The MCP server over `assistant` (an `Assistant`); `run("stdio")` serves it."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.server.mcpserver.resources import FunctionResource

    server = MCPServer(name="skiff", instructions=(
        "skiff answers from the person's own notes with a local model. search_notes finds the passages "
        "on a topic; ask gets skiff's cited answer. Chunks marked private must not leave this machine."))

    @server.tool(description="The passages of the person's notes that best answer `query` (k of them, 1-50), "
                             "with file, section and lines. Private ones are marked.")
    async def search_notes(query: str, k: int = 5) -> list[NoteChunk]:
        if not query.strip():
            raise ToolError("the query is empty")
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be between 1 and {MAX_K}")
        hits = await anyio.to_thread.run_sync(lambda: assistant.retrieve(query.strip(), k=k))
        return [NoteChunk(file=h.path, title=h.title, section=h.section, line_start=h.line_start,
                          line_end=h.line_end, page=h.page, private=h.private, score=round(1.0 - h.distance, 4),
                          text=h.text) for h in hits]

    @server.tool(description="skiff's answer to `question`, cited from the notes. route: auto (skiff's router "
                             "decides), local, local+ (more local compute) or cloud (private notes withheld).")
    async def ask(question: str, route: Literal["auto", "local", "local+", "cloud"] = "auto") -> AskResult:
        if not question.strip():
            raise ToolError("the question is empty")
        answer = await anyio.to_thread.run_sync(
            lambda: assistant.ask(question, route=None if route == "auto" else route))
        return AskResult(answer=answer.text, answer_id=answer.id, answered_by=answer.answered_by,
                         route=answer.route, reason=answer.decision.reason, notices=list(answer.notices),
                         sources=[Source(number=s.number, file=s.path, section=s.section, line_start=s.line_start,
                                         line_end=s.line_end) for s in answer.sources])

    if assistant.settings.index_dir.exists():
        for number, root in enumerate(assistant.notes.roots(), start=1):
            server.add_resource(FunctionResource(
                uri=f"skiff://folders/{number}", name=root, mime_type="application/json",
                description=f"the files skiff has indexed under {root}",
                fn=lambda root=root: _folder_listing(assistant, root)))
    return server


def _folder_listing(assistant, root: str) -> str:
    files = [{"path": record.path, "chunks": record.chunks, "kind": record.kind}
             for record in assistant.notes.indexed_files() if record.root == root]
    return json.dumps({"folder": root, "files": files}, ensure_ascii=False)


def mcp() -> None:
    """Serve skiff's tools to an agent over MCP (stdio): search_notes, ask, and the indexed folders
    as resources. Point the agent at the command `skiff mcp`."""
    with assistant_session() as assistant:
        build_server(assistant).run("stdio")
