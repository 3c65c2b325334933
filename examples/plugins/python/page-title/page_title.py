"""page-title: a Toolhost tool plugin in Python. It fetches a web page (outbound HTTP, which an
admin grants per origin) and returns its <title>.

Build (see README.md): componentize-py -d wit -w plugin componentize page_title -o page_title.wasm
"""

import json
import re
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import log, outgoing_handler
from wit_world.imports import wasi_http_types as http
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.toolhost_plugin_types import (
    CallContext,
    Content_Text,
    PluginDescription,
    ToolAnnotations,
    ToolError_Failed,
    ToolError_NotFound,
    ToolResult,
    ToolSpec,
)

SCHEMA = {
    "type": "object",
    "properties": {"url": {"type": "string", "description": "The page's http(s) URL."}},
    "required": ["url"],
    "additionalProperties": False,
}

# Pages are read up to this many bytes: a title is near the top.
MAX_BYTES = 256 * 1024


def failed(message: str) -> Err:
    """A tool error the model reads: say what went wrong and what to do."""
    return Err(ToolError_Failed(message))


def fetch(url: str) -> tuple[int, bytes]:
    """GETs `url` through the host, which checks the origin against the policy first."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise failed(f"{url} is not an http(s) URL")
    request = http.OutgoingRequest(http.Fields())
    request.set_method(http.Method_Get())
    request.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else "") or "/")
    future = outgoing_handler.handle(request, None)
    future.subscribe().block()
    outcome = future.get()
    if isinstance(outcome, Ok) and isinstance(outcome.value, Ok):
        response = outcome.value.value
    else:
        error = outcome.value.value if isinstance(outcome, Ok) else outcome
        if isinstance(error, http.ErrorCode_HttpRequestDenied):
            raise failed(f"the tool policy does not let this plugin reach {parts.scheme}://{parts.netloc}; an admin can grant it")
        raise failed(f"cannot fetch {url}: {error}")
    body = response.consume()
    stream = body.stream()
    page = b""
    try:
        while len(page) < MAX_BYTES:
            page += stream.blocking_read(MAX_BYTES - len(page))
    except Err as end:
        if not isinstance(end.value, StreamError_Closed):
            raise failed(f"the answer from {url} broke off: {end.value}")
    return response.status(), page


class Tools(exports.Tools):
    """The `tools` interface: `describe` says what the plugin offers, `invoke` runs one call."""

    def describe(self) -> PluginDescription:
        annotations = ToolAnnotations(read_only=True, destructive=False, idempotent=True, open_world=True)
        tool = ToolSpec(
            # Tool names are unique across a server's plugins: the JavaScript example has `page_title`.
            name="page_title_py",
            description="Fetches a web page and returns its title.",
            input_schema=json.dumps(SCHEMA),
            annotations=annotations,
        )
        return PluginDescription(name="page-title-py", version="0.1.0", summary="Reads the title of a web page", tools=[tool])

    def invoke(self, ctx: CallContext, tool: str, arguments: str) -> ToolResult:
        # Arguments arrive as JSON text, already checked against the schema by the host. Raising
        # Err(ToolError_...) is a tool error (invalid-arguments, denied, not-found, failed).
        if tool != "page_title_py":
            raise Err(ToolError_NotFound(f"this plugin has no tool {tool}"))
        url = json.loads(arguments)["url"]
        log.log(log.Level.INFO, f"fetching {url} for chat {ctx.chat_id}")
        status, page = fetch(url)
        title = re.search(rb"<title[^>]*>([^<]*)</title>", page, re.IGNORECASE)
        if title is None:
            return ToolResult(content=[Content_Text(f"{url} has no title (HTTP {status})")], is_error=True)
        return ToolResult(content=[Content_Text(title.group(1).decode("utf-8", "replace").strip())], is_error=False)
