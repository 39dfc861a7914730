"""Latency-tolerant requests through provider batch APIs at batch prices.

A durable SQLite queue, a ``BatchProvider`` seam (OpenAI Batch API,
Anthropic Message Batches, a local executor), and the job that splits,
submits, polls, collects, retries and prices at batch rates.
"""

from costopt_core.batch.anthropic_provider import AnthropicBatchProvider
from costopt_core.batch.job import BatchJob, BatchJobConfig, BatchNotFoundError, BatchStatus
from costopt_core.batch.local import LocalBatchProvider
from costopt_core.batch.openai_provider import OpenAIBatchProvider
from costopt_core.batch.provider import (
    BatchLimits,
    BatchProvider,
    BatchRequest,
    BatchResult,
    RemoteBatch,
)
from costopt_core.batch.queue import BatchQueue
from costopt_core.batch.split import SplitPlan, decide_outcome, plan_batches, should_flush

__all__ = [
    "AnthropicBatchProvider",
    "BatchJob",
    "BatchJobConfig",
    "BatchLimits",
    "BatchNotFoundError",
    "BatchProvider",
    "BatchQueue",
    "BatchRequest",
    "BatchResult",
    "BatchStatus",
    "LocalBatchProvider",
    "OpenAIBatchProvider",
    "RemoteBatch",
    "SplitPlan",
    "decide_outcome",
    "plan_batches",
    "should_flush",
]
