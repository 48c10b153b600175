"""`skiff mcp` as an agent meets it: the MCP SDK's own client launches `skiff mcp` and talks to
it over stdio; the real index, embedder and model answer."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from conftest import SKIFF, run_skiff

mcp = pytest.importorskip("mcp")


def _with_client(env: dict, session) -> object:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    async def run():
        params = StdioServerParameters(command=str(SKIFF), args=["mcp"], env=env)
        async with Client(params) as client:
            return await session(client)

    return asyncio.run(asyncio.wait_for(run(), 300))


@pytest.fixture
def indexed(skiff_home, vault) -> dict:
    (vault / "Diary.md").write_text("---\nprivate: true\n---\n# Diary\n\nThe spare key to the shed hangs behind "
                                    "the daily notes calendar.\n", encoding="utf-8")
    run_skiff("index", str(vault))
    return {**{k: v for k, v in os.environ.items() if k.startswith("SKIFF_")}, "SKIFF_OFFLINE": "true",
            "SKIFF_MAX_TOKENS": "24"}


def test_an_agent_searches_the_notes_and_sees_which_chunks_are_private(indexed, vault):
    async def session(client):
        tools = sorted(tool.name for tool in (await client.list_tools()).tools)
        found = await client.call_tool("search_notes", {"query": "where is the spare key to the shed", "k": 5})
        return tools, found

    tools, found = _with_client(indexed, session)
    assert tools == ["ask", "search_notes"]
    assert not found.is_error
    chunks = found.structured_content["result"]
    assert 1 <= len(chunks) <= 5
    diary = [chunk for chunk in chunks if chunk["file"].endswith("Diary.md")]
    assert diary and diary[0]["private"] is True and "spare key" in diary[0]["text"]
    assert all(chunk["line_start"] >= 1 and chunk["section"] is not None for chunk in chunks)


def test_bad_arguments_are_tool_errors_and_the_server_carries_on(indexed):
    async def session(client):
        empty = await client.call_tool("search_notes", {"query": "  ", "k": 3})
        too_many = await client.call_tool("search_notes", {"query": "links", "k": 5000})
        wrong_route = await client.call_tool("ask", {"question": "hi", "route": "moon"})
        still = await client.call_tool("search_notes", {"query": "links", "k": 1})
        return empty, too_many, wrong_route, still

    empty, too_many, wrong_route, still = _with_client(indexed, session)
    assert empty.is_error and "empty" in empty.content[0].text
    assert too_many.is_error and "between 1 and 50" in too_many.content[0].text
    assert wrong_route.is_error
    assert not still.is_error and len(still.structured_content["result"]) == 1


def test_ask_gives_skiffs_recorded_answer_and_the_folders_are_resources(indexed, vault):
    async def session(client):
        answered = await client.call_tool("ask", {"question": "How do I link to a heading?", "route": "local"})
        resources = (await client.list_resources()).resources
        listing = await client.read_resource(resources[0].uri)
        return answered, resources, listing

    answered, resources, listing = _with_client(indexed, session)
    result = answered.structured_content
    assert not answered.is_error and result["answer"] and result["answered_by"] == "local"
    record = json.loads(run_skiff("show", "--json", result["answer_id"]).stdout)
    assert record["answer"] == result["answer"]
    assert [resource.name for resource in resources] == [str(vault)]
    files = json.loads(listing.contents[0].text)["files"]
    assert any(entry["path"].endswith("Internal links.md") and entry["chunks"] > 0 for entry in files)
