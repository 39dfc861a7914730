"""Latency-tolerant requests through provider batch APIs at batch prices.

A durable SQLite queue, a ``BatchProvider`` seam (OpenAI Batch API,
Anthropic Message Batches, a local executor), and the job that splits,
submits, polls, collects, retries and prices at batch rates; and what the
framework front-ends share over it (``BatchFront``, ``JobHandle``).
"""

from costopt_core.batch.anthropic_provider import AnthropicBatchProvider
from costopt_core.batch.front import (
    PROVIDER_NAMES,
    BatchFront,
    BatchFrontSettings,
    ProviderName,
    call_params,
    check_inputs,
    check_json,
    each_request,
    model_params,
    request_ids,
    with_errors,
)
from costopt_core.batch.handle import JobHandle, ResultConverter, batch_metadata
from costopt_core.batch.job import BatchJob, BatchJobConfig, BatchNotFoundError, BatchStatus
from costopt_core.batch.local import LocalBatchProvider
from costopt_core.batch.openai_provider import OpenAIBatchProvider
from costopt_core.batch.provider import (
    BatchLimits,
    BatchProvider,
    BatchRequest,
    BatchResult,
    RecoverableBatchProvider,
    RemoteBatch,
    Submission,
)
from costopt_core.batch.queue import BatchQueue
from costopt_core.batch.split import (
    SplitPlan,
    decide_outcome,
    plan_batches,
    should_flush,
    submission_abandoned,
)
from costopt_core.errors import BatchFailedError, BatchRequestError

__all__ = [
    "PROVIDER_NAMES",
    "AnthropicBatchProvider",
    "BatchFailedError",
    "BatchFront",
    "BatchFrontSettings",
    "BatchJob",
    "BatchJobConfig",
    "BatchLimits",
    "BatchNotFoundError",
    "BatchProvider",
    "BatchQueue",
    "BatchRequest",
    "BatchRequestError",
    "BatchResult",
    "BatchStatus",
    "JobHandle",
    "LocalBatchProvider",
    "OpenAIBatchProvider",
    "ProviderName",
    "RecoverableBatchProvider",
    "RemoteBatch",
    "ResultConverter",
    "SplitPlan",
    "Submission",
    "batch_metadata",
    "call_params",
    "check_inputs",
    "check_json",
    "decide_outcome",
    "each_request",
    "model_params",
    "plan_batches",
    "request_ids",
    "should_flush",
    "submission_abandoned",
    "with_errors",
]
