"""Drives Toolhost's MCP gateway with the official MCP Python SDK, as an MCP client would.

Reads a plan (JSON) on standard input: how to connect (`"transport": "http"` with `url` and
`token`, or `"stdio"` with `command` and `env`), how to negotiate (`"mode": "auto"` for the
newest revision both sides speak, `"legacy"` for the initialize handshake), and the calls to
make. Prints what it saw as one JSON line: the negotiated protocol revision, every tool listed
(following the cursor), and each call's outcome.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def text_of(result):
    return "\n".join(part.text for part in result.content if getattr(part, "type", None) == "text")


async def session(client, calls):
    tools, pages, cursor = [], 0, None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        pages += 1
        for tool in page.tools:
            hints = tool.annotations.model_dump(exclude_none=True) if tool.annotations else {}
            tools.append({"name": tool.name, "annotations": hints, "schema": tool.input_schema})
        cursor = page.next_cursor
        if not cursor:
            break
    results = []
    for name, arguments in calls:
        progress = []

        async def on_progress(value, total, message):
            progress.append({"progress": value, "total": total, "message": message})

        try:
            result = await client.call_tool(name, arguments, progress_callback=on_progress)
            results.append(
                {"tool": name, "is_error": bool(result.is_error), "text": text_of(result), "progress": progress}
            )
        except Exception as error:  # a protocol error: the SDK raises it
            results.append({"tool": name, "protocol_error": str(error)})
    return {"protocol_version": client.protocol_version, "pages": pages, "tools": tools, "results": results}


async def main():
    plan = json.load(sys.stdin)
    if plan["transport"] == "http":
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {plan['token']}"}, timeout=60)
        server = streamable_http_client(plan["url"], http_client=http)
    else:
        server = StdioServerParameters(command=plan["command"][0], args=plan["command"][1:], env=plan.get("env"))
    async with Client(server, mode=plan.get("mode", "auto"), raise_exceptions=True) as client:
        report = await session(client, plan["calls"])
    print(json.dumps(report))


asyncio.run(main())
