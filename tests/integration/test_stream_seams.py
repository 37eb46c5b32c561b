"""Verified seams end to end, over real sockets (issue 12, deliverables 2 and 3).

A scripted HTTP/1.1 server on 127.0.0.1 plays a model that is *not*
continuation-consistent: asked to continue from a shorter prefix, it says
something else. The stream must flag the seam (or raise), never deliver a
garbled join, and never trim text on a guess. Continuation-consistent servers
(the reference server, the chaos suite, the demo) verify every seam: see
test_stream_resume.py and test_chaos_scenarios.py.
"""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs
from support.scripted_server import Reply, Request, ScriptedServer

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.errors import ResumeDivergedError

pytestmark = pytest.mark.timeout(30)

CFG = StreamConfig(http2=False, backoff_initial=0.01, backoff_max=0.02, seam_overlap=4)
FIRST = ["The", " quick", " brown", " fox"]


def line(obj: dict[str, object]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


class Fickle:
    """Continues a prompt that ends the first answer exactly; says something else to
    any other prefix (as a sampling model, or one whose state a re-prompt loses)."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def __call__(self, request: Request, reply: Reply) -> None:
        prompt = json.loads(request.body)["prompt"]
        self.prompts.append(prompt)
        await reply.start()
        if len(self.prompts) == 1:  # the first answer, cut after its 4 tokens
            for t in FIRST:
                await reply.send(line({"response": t}))
            reply.drop()
            return
        if prompt == "p" + "".join(FIRST):  # continues everything delivered
            tokens = [" jumps", " over"]
        else:  # any shorter prefix: another continuation
            tokens = [" lazy", " dog", " sleeps"]
        for t in tokens:
            await reply.send(line({"response": t}))
        await reply.send(line({"response": "", "done": True, "done_reason": "stop"}))
        await reply.end()


async def test_a_continuation_that_does_not_regenerate_the_overlap_is_flagged() -> None:
    server = Fickle()
    async with ScriptedServer(server) as srv, StreamClient(srv.url, config=CFG) as client:
        with capture_logs() as logs:
            stream = client.generate(model="m", prompt="p", raw=True)
            text = "".join([c.response async for c in stream])
        result = stream.result
    # Not garbled: what was delivered, then a continuation of exactly that.
    assert text == result.text == "The quick brown fox jumps over"
    assert not result.verified
    (seam,) = result.seams
    assert not seam.verified and seam.offset == len("The quick brown fox")
    # First the request that held back " fox"; it diverged; then all of it.
    assert server.prompts == ["p", "pThe quick brown", "pThe quick brown fox"]
    (event,) = [e for e in logs if e["event"] == "stream.diverged"]
    assert event["action"] == "flag" and event["overlap"] == len(" fox")
    assert "lazy" not in repr(logs)  # content only with log_content


async def test_on_divergence_raise_ends_with_what_was_delivered() -> None:
    server = Fickle()
    cfg = CFG.replace(on_divergence="raise")
    async with ScriptedServer(server) as srv, StreamClient(srv.url, config=cfg) as client:
        stream = client.generate(model="m", prompt="p", raw=True)
        got: list[str] = []
        with pytest.raises(ResumeDivergedError) as info:
            async for chunk in stream:
                got.append(chunk.response)
    assert "".join(got) == "The quick brown fox"  # nothing after the seam
    assert info.value.delivered == "The quick brown fox"
    assert info.value.continuation.startswith(" lazy")
    assert not info.value.retryable and len(server.prompts) == 2


async def test_a_consistent_continuation_verifies_and_asks_only_for_what_is_left() -> None:
    """The same shape, but the server continues any prefix of its one answer."""
    answer = [*FIRST, " jumps", " over"]
    bodies: list[dict[str, object]] = []

    async def handler(request: Request, reply: Reply) -> None:
        body = json.loads(request.body)
        bodies.append(body)
        carried = str(body["prompt"])[1:]
        await reply.start()
        text, sent = "", 0
        for t in answer:
            text += t
            if len(text) <= len(carried):
                continue
            sent += 1  # the running count, as the reference server reports it
            await reply.send(line({"response": t, "eval_count": sent}))
            if len(bodies) == 1 and text == "".join(FIRST):
                reply.drop()
                return
        await reply.send(line({"response": "", "done": True, "done_reason": "length"}))
        await reply.end()

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        result = await client.generate(
            model="m", prompt="p", raw=True, options={"num_predict": 6}
        ).collect()
    assert result.text == "".join(answer) and result.verified
    (seam,) = result.seams
    assert seam.verified and seam.overlap == len(" fox") and seam.cut == len(" fox")
    # 4 tokens delivered, " fox" held back: the resume carries 3 and asks for 3 more.
    assert bodies[1]["prompt"] == "pThe quick brown"
    assert bodies[1]["options"] == {"num_predict": 3}
    assert result.eval_count == 6
