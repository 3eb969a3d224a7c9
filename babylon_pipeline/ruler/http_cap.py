"""An HTTP client for the `openai` client whose every response body stops at a byte cap.

`OpenAIJudge` reads a successful answer itself, within its cap; but on a final error status the
`openai` client reads the whole error body before raising, and a proxy's 1 GB error page would be
held in memory per concurrent group. Capping the transport's stream bounds every body, whoever
reads it. (The `openai` client pinned here speaks `httpx2`, an `httpx`-compatible fork.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2

from babylon_pipeline.ruler.response import JudgeResponseError

CONNECTION_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
"""The `openai` client's own defaults (its limits apply only to a transport it builds itself)."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._cap:
                raise JudgeResponseError("too_large", f"the response is over the {self._cap}-byte cap; answer briefly")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, cap: int) -> None:
        self._inner = httpx2.AsyncHTTPTransport(limits=CONNECTION_LIMITS)
        self._cap = cap

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self._cap)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def capped_http_client(cap: int) -> httpx2.AsyncClient:
    """An `httpx2.AsyncClient` for `openai.AsyncOpenAI(http_client=...)`: bodies over `cap` bytes
    (as received, before any decompression) raise a `too_large` `JudgeResponseError`."""
    return httpx2.AsyncClient(transport=_CappedTransport(cap), follow_redirects=True)
