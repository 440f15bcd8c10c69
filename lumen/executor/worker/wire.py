"""The wire form of the executor's domain: ``lumen.v1`` executor messages <-> domain values.

Inbound conversion validates what a message can get wrong and raises
:class:`~lumen.executor.worker.errors.InvalidField` with the field's path, so that the worker
only sees consistent values. Request ids are integers on the wire and decimal strings inside the
engine (a KV page's checksum covers the string, so every worker must spell it the same way).
Units change here: the protocol speaks milliseconds, the domain seconds.

Used by the servicer (inbound) and by :mod:`lumen.executor.worker.client` and
:mod:`lumen.executor.worker.assist_link` (the reverse). The assist link's mirror stream is
stateful: :class:`MirrorEncoder` (survivor) sends each request's history in full once and then
only its new output tokens; :class:`MirrorDecoder` (recovering worker) rebuilds the histories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lumen.executor.engine.interface import (
    MAX_LOGPROBS,
    Proposal,
    RequestSpec,
    SamplingParams,
    TokenLogprob,
)
from lumen.executor.engine.kv_page import KVPage
from lumen.executor.worker.api import STAGES, GenerationRequest, TokenEvent, WorkerStatus
from lumen.executor.worker.assist import Mirror
from lumen.executor.worker.errors import InvalidField
from lumen.proto.gen.v1 import executor_pb2 as pb
from lumen.proto.gen.v1 import planner_pb2 as planner_pb

#: Bounds on one message's contents (beyond them a call is refused, not attempted).
MAX_CONTEXT_TOKENS = 1 << 20
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 1e3
MAX_ADDRESS = 256
#: Most draft tokens one proposal may carry.
MAX_PROPOSAL_TOKENS = 32

_STAGES_OUT = {
    "draft-loading": pb.RECOVERY_STAGE_DRAFT_LOADING,
    "assisting": pb.RECOVERY_STAGE_ASSISTING,
    "switching": pb.RECOVERY_STAGE_SWITCHING,
    "serving": pb.RECOVERY_STAGE_SERVING,
}
_STAGES_IN = {v: k for k, v in _STAGES_OUT.items()}


@dataclass(frozen=True, slots=True)
class Submission:
    """A SubmitRequest in domain terms: the request and the peers' addresses it names."""

    request: GenerationRequest
    holder_address: str = ""
    restore_address: str = ""


# ---- stages ------------------------------------------------------------------------------------


def stage_to_proto(stage: str) -> pb.RecoveryStage:
    """The enum value of a stage name (one of :data:`~lumen.executor.worker.api.STAGES`)."""
    try:
        return _STAGES_OUT[stage]
    except KeyError:
        known = ", ".join(STAGES)
        raise InvalidField("stage", f"unknown stage {stage!r}; known: {known}") from None


def stage_from_proto(value: int, path: str = "stage") -> str:
    """The stage name of an enum value (UNSPECIFIED and unknown values are refused)."""
    try:
        return _STAGES_IN[value]  # type: ignore[index]
    except KeyError:
        raise InvalidField(path, f"unknown or unspecified recovery stage {value}") from None


# ---- requests and tokens -----------------------------------------------------------------------


def submission_to_proto(sub: Submission) -> pb.SubmitRequestRequest:
    r = sub.request
    msg = pb.SubmitRequestRequest(
        request_id=r.request_id,
        prompt_token_ids=list(r.prompt_token_ids),
        generated_token_ids=list(r.generated_token_ids),
        max_tokens=r.max_tokens,
        temperature=r.temperature,
        stop_token_ids=list(r.stop_token_ids),
        checkpoint_holder_address=sub.holder_address,
        restore_from_address=sub.restore_address,
    )
    if r.seed is not None:
        msg.seed = r.seed
    if r.top_p < 1.0:
        msg.top_p = r.top_p
    msg.top_k = r.top_k
    if r.logprobs is not None:
        msg.logprobs = r.logprobs
    if r.checkpoint_holder is not None:
        msg.checkpoint_holder = r.checkpoint_holder
    if r.restore_from is not None:
        msg.restore_from = r.restore_from
    return msg


def submission_from_proto(msg: pb.SubmitRequestRequest) -> Submission:
    """Validate a SubmitRequest (raises :class:`InvalidField`)."""
    prompt = tuple(msg.prompt_token_ids)
    generated = tuple(msg.generated_token_ids)
    if not prompt:
        raise InvalidField("prompt_token_ids", "at least one token")
    if msg.max_tokens < 1:
        raise InvalidField("max_tokens", "must be >= 1")
    if len(generated) >= msg.max_tokens:
        raise InvalidField(
            "generated_token_ids",
            f"{len(generated)} tokens already generated of max_tokens={msg.max_tokens}",
        )
    if len(prompt) + msg.max_tokens > MAX_CONTEXT_TOKENS:
        raise InvalidField("max_tokens", f"prompt + max_tokens exceeds {MAX_CONTEXT_TOKENS}")
    if not (math.isfinite(msg.temperature) and 0.0 <= msg.temperature <= MAX_TEMPERATURE):
        raise InvalidField("temperature", f"must be in [0, {MAX_TEMPERATURE}]")
    if msg.HasField("seed") and msg.seed > MAX_SEED:
        raise InvalidField("seed", f"must be <= {MAX_SEED}")
    top_p = msg.top_p if msg.HasField("top_p") else 1.0
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise InvalidField("top_p", "must be in (0, 1]")
    logprobs = msg.logprobs if msg.HasField("logprobs") else None
    if logprobs is not None and logprobs > MAX_LOGPROBS:
        raise InvalidField("logprobs", f"must be <= {MAX_LOGPROBS}")
    for name in ("checkpoint_holder_address", "restore_from_address"):
        if len(getattr(msg, name)) > MAX_ADDRESS:
            raise InvalidField(name, f"longer than {MAX_ADDRESS} characters")
    request = GenerationRequest(
        request_id=msg.request_id,
        prompt_token_ids=prompt,
        max_tokens=msg.max_tokens,
        generated_token_ids=generated,
        temperature=msg.temperature,
        seed=msg.seed if msg.HasField("seed") else None,
        stop_token_ids=tuple(msg.stop_token_ids),
        top_p=top_p,
        top_k=msg.top_k,
        logprobs=logprobs,
        checkpoint_holder=msg.checkpoint_holder if msg.HasField("checkpoint_holder") else None,
        restore_from=msg.restore_from if msg.HasField("restore_from") else None,
    )
    return Submission(request, msg.checkpoint_holder_address, msg.restore_from_address)


def token_event_to_proto(event: TokenEvent) -> pb.TokenChunk:
    return pb.TokenChunk(
        request_id=event.request_id,
        token_ids=list(event.token_ids),
        generated_tokens=event.generated_tokens,
        finished=event.finished,
        logprobs=[
            pb.TokenLogprob(
                logprob=lp.logprob,
                top_token_ids=[t for t, _ in lp.top],
                top_logprobs=[v for _, v in lp.top],
            )
            for lp in event.logprobs
        ],
    )


def token_event_from_proto(msg: pb.TokenChunk) -> TokenEvent:
    return TokenEvent(
        request_id=msg.request_id,
        token_ids=tuple(msg.token_ids),
        generated_tokens=msg.generated_tokens,
        finished=msg.finished,
        logprobs=tuple(
            TokenLogprob(lp.logprob, tuple(zip(lp.top_token_ids, lp.top_logprobs, strict=False)))
            for lp in msg.logprobs
        ),
    )


# ---- KV pages ----------------------------------------------------------------------------------


def page_to_proto(page: KVPage, token_ids: Sequence[int] = (), reserve_bytes: int = 0) -> pb.KVPage:
    """A page on the wire; ``token_ids`` let the holder check its tag chain."""
    return pb.KVPage(
        request_id=int(page.request_id),
        page_index=page.page_index,
        start_position=page.start_position,
        end_position=page.end_position,
        tag=page.token_tag,
        checksum=page.checksum,
        dtype=page.dtype,
        shape=list(page.shape),
        payload=page.payload,
        token_ids=list(token_ids),
        reserve_bytes=reserve_bytes,
    )


def page_from_proto(msg: pb.KVPage) -> tuple[KVPage, tuple[int, ...]]:
    """The page and its token ids (the page may still fail :meth:`KVPage.verify`)."""
    if msg.end_position <= msg.start_position:
        raise InvalidField("end_position", "must exceed start_position")
    page = KVPage(
        request_id=str(msg.request_id),
        page_index=msg.page_index,
        start_position=msg.start_position,
        end_position=msg.end_position,
        token_tag=bytes(msg.tag),
        dtype=msg.dtype,
        shape=tuple(msg.shape),
        payload=bytes(msg.payload),
        checksum=msg.checksum,
    )
    return page, tuple(msg.token_ids)


def is_page(msg: pb.KVPage) -> bool:
    """Whether a SendPages message carries a page (not only reserve/release control)."""
    return msg.end_position > msg.start_position or bool(msg.payload)


# ---- status ------------------------------------------------------------------------------------


def status_to_proto(status: WorkerStatus, held_bytes: int = 0) -> pb.ReportLoadResponse:
    msg = pb.ReportLoadResponse(
        worker_id=status.worker_id,
        load=planner_pb.WorkerLoad(
            queue_length=status.queue_length,
            waiting_time_ms=status.waiting_time_s * 1e3,
            gpu_kv_used_tokens=status.kv_used_tokens,
            gpu_kv_capacity_tokens=status.kv_capacity_tokens,
            host_budget_bytes=status.host_budget_bytes,
            host_reserved_bytes=status.host_reserved_bytes,
        ),
        stage=stage_to_proto(status.stage),
        running_requests=status.running,
        steps=status.steps,
        checkpointed_tokens_by_request=dict(status.checkpoints),
        host_held_bytes=held_bytes,
        max_model_len=status.max_model_len,
    )
    msg.measured_at.GetCurrentTime()
    return msg


def status_from_proto(msg: pb.ReportLoadResponse) -> WorkerStatus:
    load = msg.load
    return WorkerStatus(
        worker_id=msg.worker_id,
        stage=stage_from_proto(msg.stage),
        queue_length=load.queue_length,
        running=msg.running_requests,
        waiting_time_s=load.waiting_time_ms / 1e3,
        kv_used_tokens=load.gpu_kv_used_tokens,
        kv_capacity_tokens=load.gpu_kv_capacity_tokens,
        host_budget_bytes=load.host_budget_bytes,
        host_reserved_bytes=load.host_reserved_bytes,
        steps=msg.steps,
        checkpoints=dict(msg.checkpointed_tokens_by_request),
        max_model_len=msg.max_model_len,
    )


# ---- the assist link ---------------------------------------------------------------------------


class MirrorEncoder:
    """Survivor side of one MirrorRequests stream: mirrors -> snapshots, sending each
    request's prompt once and afterwards only the output tokens the stream has not carried."""

    def __init__(self) -> None:
        self._sent: dict[str, int] = {}

    def encode(self, mirror: Mirror) -> pb.MirrorSnapshot:
        msg = pb.MirrorSnapshot(steps=mirror.steps)
        sent: dict[str, int] = {}
        for spec in mirror.specs:
            outputs = spec.output_token_ids
            offset = self._sent.get(spec.request_id, 0)
            if offset > len(outputs):  # not the history we sent: start over
                offset = 0
            item = msg.requests.add(
                request_id=int(spec.request_id),
                output_offset_tokens=offset,
                output_token_ids=list(outputs[offset:]),
            )
            if offset == 0:
                item.prompt_token_ids.extend(spec.prompt_token_ids)
                item.max_tokens = spec.sampling.max_new_tokens
                item.stop_token_ids.extend(spec.sampling.stop_token_ids)
            sent[spec.request_id] = len(outputs)
        self._sent = sent
        return msg


class MirrorDecoder:
    """Recovering side of one MirrorRequests stream: snapshots -> mirrors of greedy specs."""

    def __init__(self) -> None:
        self._specs: dict[str, RequestSpec] = {}

    def decode(self, msg: pb.MirrorSnapshot) -> Mirror:
        specs: dict[str, RequestSpec] = {}
        for k, item in enumerate(msg.requests):
            rid = str(item.request_id)
            new = tuple(item.output_token_ids)
            if item.output_offset_tokens == 0:
                if not item.prompt_token_ids:
                    raise InvalidField(f"requests[{k}].prompt_token_ids", "missing")
                sampling = SamplingParams(
                    max_new_tokens=item.max_tokens, stop_token_ids=tuple(item.stop_token_ids)
                )
                spec = RequestSpec(rid, tuple(item.prompt_token_ids), sampling, new)
            else:
                known = self._specs.get(rid)
                if known is None or len(known.output_token_ids) != item.output_offset_tokens:
                    raise InvalidField(
                        f"requests[{k}].output_offset_tokens", "does not continue the stream"
                    )
                outputs = known.output_token_ids + new
                spec = RequestSpec(rid, known.prompt_token_ids, known.sampling, outputs)
            specs[rid] = spec
        self._specs = specs
        return Mirror(msg.steps, tuple(specs.values()))


def proposals_to_proto(
    proposals: Sequence[Proposal], assistant_worker: int
) -> pb.SubmitProposalsRequest:
    """Greedy proposals on the wire (a sampled draft's probabilities are not carried)."""
    return pb.SubmitProposalsRequest(
        assistant_worker=assistant_worker,
        proposals=[
            pb.DraftProposal(
                request_id=int(p.request_id),
                history_tokens=p.base_len,
                last_token_id=p.last_token_id,
                token_ids=list(p.token_ids),
            )
            for p in proposals
        ],
    )


def proposals_from_proto(msg: pb.SubmitProposalsRequest) -> list[Proposal]:
    """Validate proposals (raises :class:`InvalidField`)."""
    out: list[Proposal] = []
    for k, p in enumerate(msg.proposals):
        if not 1 <= len(p.token_ids) <= MAX_PROPOSAL_TOKENS:
            raise InvalidField(
                f"proposals[{k}].token_ids", f"expected 1 to {MAX_PROPOSAL_TOKENS} tokens"
            )
        if p.history_tokens < 1:
            raise InvalidField(f"proposals[{k}].history_tokens", "must be >= 1")
        out.append(
            Proposal(str(p.request_id), p.history_tokens, p.last_token_id, tuple(p.token_ids))
        )
    return out
