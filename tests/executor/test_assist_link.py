"""Assisting across processes: a recovering worker drafts for its survivor over gRPC.

The survivor and the recovering worker are two gRPC servers on port 0 that share nothing but
the wire (the recovering worker's default assist link is ``GrpcAssistLink``): the survivor's
outputs stay token-identical to its target alone whether the draft agrees with it (proposals
accepted) or not (proposals rejected).
"""

from __future__ import annotations

import time

import grpc
import pytest

from lumen.executor.engine.interface import Proposal, RequestSpec, SamplingParams
from lumen.executor.worker import wire
from lumen.executor.worker.api import GenerationRequest
from lumen.executor.worker.assist import Mirror
from lumen.executor.worker.client import ExecutorClient
from lumen.executor.worker.errors import InvalidField
from lumen.proto.gen.v1 import executor_pb2 as pb

from .conftest import TINY, WorkerFactory
from .test_stages import _wait_assisting
from .test_worker import PROMPT, collect, reference, stub


def _spec(rid: str, outputs: tuple[int, ...], prompt: tuple[int, ...] = (1, 2, 3)) -> RequestSpec:
    return RequestSpec(rid, prompt, SamplingParams(max_new_tokens=20, stop_token_ids=(9,)), outputs)


def test_mirror_stream_sends_each_history_once_then_only_new_tokens() -> None:
    encoder, decoder = wire.MirrorEncoder(), wire.MirrorDecoder()
    first = encoder.encode(Mirror(1, (_spec("7", (5,)),)))
    assert list(first.requests[0].prompt_token_ids) == [1, 2, 3]
    assert decoder.decode(first) == Mirror(1, (_spec("7", (5,)),))
    second = encoder.encode(Mirror(2, (_spec("7", (5, 6, 4)), _spec("8", (), (4, 4)))))
    old, new = second.requests
    assert (old.output_offset_tokens, list(old.output_token_ids)) == (1, [6, 4])
    assert not old.prompt_token_ids  # the prompt is not sent again
    assert list(new.prompt_token_ids) == [4, 4] and new.max_tokens == 20
    mirror = decoder.decode(second)
    assert mirror == Mirror(2, (_spec("7", (5, 6, 4)), _spec("8", (), (4, 4))))
    # request 7 ended: it leaves the mirror, and comes back in full if seen again
    assert decoder.decode(encoder.encode(Mirror(3, (_spec("8", (1,), (4, 4)),)))).specs == (
        _spec("8", (1,), (4, 4)),
    )
    again = encoder.encode(Mirror(4, (_spec("7", (5, 6, 4, 2)),)))
    assert again.requests[0].output_offset_tokens == 0
    assert decoder.decode(again).specs == (_spec("7", (5, 6, 4, 2)),)


def test_mirror_decoder_refuses_a_stream_that_does_not_continue() -> None:
    decoder = wire.MirrorDecoder()
    gap = pb.MirrorSnapshot(
        steps=3, requests=[pb.MirroredRequest(request_id=7, output_offset_tokens=2)]
    )
    with pytest.raises(InvalidField, match="output_offset_tokens"):
        decoder.decode(gap)
    with pytest.raises(InvalidField, match="prompt_token_ids"):
        decoder.decode(pb.MirrorSnapshot(requests=[pb.MirroredRequest(request_id=7)]))


def test_proposals_round_trip_and_bad_ones_are_refused_with_the_field() -> None:
    proposals = [Proposal("7", 12, 5, (1, 2, 3, 4)), Proposal("9", 3, 0, (8,))]
    back = wire.proposals_from_proto(wire.proposals_to_proto(proposals, assistant_worker=1))
    assert [(p.request_id, p.base_len, p.last_token_id, p.token_ids) for p in back] == [
        ("7", 12, 5, (1, 2, 3, 4)),
        ("9", 3, 0, (8,)),
    ]
    empty = pb.SubmitProposalsRequest(proposals=[pb.DraftProposal(request_id=1, history_tokens=2)])
    with pytest.raises(InvalidField, match=r"proposals\[0\].token_ids"):
        wire.proposals_from_proto(empty)
    long = pb.DraftProposal(request_id=1, history_tokens=2, token_ids=[1] * 33)
    with pytest.raises(InvalidField, match="token_ids"):
        wire.proposals_from_proto(pb.SubmitProposalsRequest(proposals=[long]))
    none = pb.DraftProposal(request_id=1, token_ids=[1])
    with pytest.raises(InvalidField, match="history_tokens"):
        wire.proposals_from_proto(pb.SubmitProposalsRequest(proposals=[none]))


@pytest.mark.parametrize("draft_kind", ["same-as-target", "unrelated"])
def test_a_recovering_worker_drafts_for_its_survivor_over_grpc(
    make_worker: WorkerFactory, draft_kind: str
) -> None:
    from lumen.executor.engine.interface import RandomWeights
    from lumen.executor.worker.assist_link import GrpcAssistLink

    draft = (
        RandomWeights(TINY, 0)  # the target's own weights: agrees on every token
        if draft_kind == "same-as-target"
        else RandomWeights(TINY.with_layers(1), 5)
    )
    survivor = make_worker(worker_id=0, min_step_s=0.02)
    recovering = make_worker(
        worker_id=1,
        draft_weights=draft,
        start_stage="draft-loading",
        peers={0: survivor.target},  # the survivor's address comes from the peer table
        auto_switch=False,
    )
    requests = [
        GenerationRequest(41, PROMPT, max_tokens=30),
        GenerationRequest(42, PROMPT[:9], max_tokens=30, temperature=0.8, seed=4),
    ]
    with ExecutorClient(recovering.target, 1) as helper:
        _wait_assisting(helper, survivor=0)
        assert helper.status().stage == "assisting"
    assistant = recovering.worker.stages.assistant
    assert assistant is not None and isinstance(assistant.link, GrpcAssistLink)
    with ExecutorClient(survivor.target, 0) as client:
        for request in requests:
            assert collect(client, request) == reference(request)
    stats = survivor.worker.loop.stats()
    assert assistant.stats().rounds > 0
    if draft_kind == "same-as-target":
        # the greedy request's tokens came partly from accepted drafts (the sampled one is
        # never mirrored); how many depends on timing, so only their presence is asserted
        assert stats.accepted_tokens > 0
        assert assistant.stats().queued > 0
    else:
        assert stats.accepted_tokens <= stats.draft_tokens
    # the survivor stops: the stream breaks and the assistant stops by itself
    survivor.stop(0)
    deadline = time.monotonic() + 5
    while assistant._thread.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    recovering.stop(0)


def test_submit_proposals_refuses_bad_input_and_drops_stale_proposals(
    make_worker: WorkerFactory,
) -> None:
    from lumen.executor.worker.assist_link import GrpcAssistLink

    survivor = make_worker(worker_id=0)
    link = GrpcAssistLink(survivor.target, assistant_worker=1)
    channel, raw = stub(survivor.target)
    try:
        assert link.accept_proposals([]) == 0
        # a proposal for a request the survivor does not run is stale: dropped, not an error
        assert link.accept_proposals([Proposal("99", 5, 1, (1, 2))]) == 0
        assert link.mirrored_requests().specs == ()
        with pytest.raises(grpc.RpcError) as refused:
            raw.SubmitProposals(
                pb.SubmitProposalsRequest(proposals=[pb.DraftProposal(request_id=1)]), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "proposals[0].token_ids" in (refused.value.details() or "")
    finally:
        link.close()
        channel.close()
