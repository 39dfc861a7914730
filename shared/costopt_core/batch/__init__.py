"""Latency-tolerant requests through provider batch APIs at batch prices.

A durable SQLite queue, a ``BatchProvider`` seam (OpenAI Batch API,
Anthropic Message Batches, a local executor), and the job that splits,
submits, polls, collects, retries and prices at batch rates.
"""

from costopt_core.batch.provider import (
    BatchLimits,
    BatchProvider,
    BatchRequest,
    BatchResult,
    RemoteBatch,
)

__all__ = ["BatchLimits", "BatchProvider", "BatchRequest", "BatchResult", "RemoteBatch"]
