"""Pins each package's public names: a removal or rename is a deliberate change."""

from __future__ import annotations

import importlib

import pytest

import costopt_core
import langchain_costopt

CORE = {
    "DEFAULT_BASELINE_MODEL", "LEVERS", "BatchError", "Budget", "BudgetDecision",
    "BudgetExceededError", "CacheBackendError", "CachingEmbedder", "CallRecord", "ChatRequest",
    "ConfigurationError", "CostEngine", "CostLedger", "CostOptError", "Embedder", "Message",
    "ModelPrice", "PriceCatalog", "PricingNotFoundError", "RoutingError",
    "SentenceTransformerEmbedder",
    "StoreError", "TokenCounter", "Totals", "UnknownModelPriceWarning", "Usage",
    "UsageFormatError", "__version__", "cost_of", "default_engine", "evaluate_budget",
    "normalize_usage", "set_default_engine", "current_tenant", "tenant_scope",
    "current_engine", "engine_scope", "overhead_of",
}  # fmt: skip
CACHE = {
    "BackendStats", "CacheBackend", "CacheConfig", "CacheEntry", "CacheHit", "CacheRequest",
    "CacheResult", "CacheStats", "CachedResponse", "CalibrationResult", "CombinedLookup",
    "ComponentCache",
    "ComponentStats", "GuardConfig", "MemoryCacheBackend", "PairModel", "PairScorer",
    "PairWeights", "RedisCacheBackend", "SQLiteCacheBackend", "SemanticCache", "Verifier",
    "calibrate_pair_threshold", "calibrate_threshold", "check_guards", "decide",
    "pair_probability", "word_overlap",
}  # fmt: skip
CONTEXT = {
    "DAYS_PER_MONTH", "MIN_CACHEABLE_TOKENS", "AbstractiveConfig", "AbstractiveSummary",
    "Breakpoint", "CacheProjection", "ChunkSummary", "DuplicateInstruction", "ExampleBlock",
    "PrefixPlan", "PromptReport", "RelevanceConfig", "RelevanceResult", "ScoredChunk",
    "SectionCost", "SummarizerConfig", "SummaryResult", "VolatileSpan", "analyze_prompt",
    "asummarize_abstractive", "asummarize_extractive", "blank_question", "find_volatile",
    "min_cacheable_tokens",
    "normalize_scores", "plan_prefix_cache", "prompt_cache_key", "provider_for",
    "select_relevant", "summarize_abstractive", "summarize_extractive",
}  # fmt: skip
MEMORY = {
    "CachePrices", "ConversationMemory", "FlushDecision", "FlushResult", "FlushTradeoff",
    "MemoryConfig", "MemoryState", "MemoryView", "Recalled", "STATE_VERSION", "SUMMARY_PROMPT",
    "SummaryEntry", "SummaryJob", "Unit", "aflush", "aplan_context", "arecall_sentences",
    "cache_prices", "fact_score", "flush", "flush_decision", "flush_tradeoff",
    "key_fact_candidates", "message_fingerprint", "message_tokens", "plan_context", "recall_query",
    "recall_sentences", "render_turn", "select_facts", "split_units", "summarize_lines",
    "summary_job_messages", "summary_message"
}  # fmt: skip
ROUTING = {
    "CalibrationReport", "CurvePoint", "Encoded", "FEATURE_NAMES", "HeuristicClassifier",
    "HeuristicWeights", "Judge", "LearnedClassifier", "QuestionType", "RequestFeatures",
    "RouteClassifier", "RouteDecision", "RouteInput", "Router", "RouterConfig", "Sample", "Tier",
    "TierCall", "Tiers", "TrainableClassifier", "ValidatorConfig", "alabel_samples",
    "as_messages", "calibrate",
    "calibrate_from_predictions", "choose_tier", "choose_tiers", "cost_scales",
    "cross_validated_probs", "effective_threshold", "exact_match", "extract_features",
    "feature_matrix", "is_trainable", "label_samples", "monotone", "normalize_thresholds",
    "probabilities_from_relative", "relative_quality_targets", "routing_text",
    "wants_structured_output"
}  # fmt: skip
BATCH = {
    "AnthropicBatchProvider", "BatchFailedError", "BatchFront", "BatchFrontSettings", "BatchJob",
    "BatchJobConfig", "BatchLimits", "BatchNotFoundError", "BatchProvider", "BatchQueue",
    "BatchRequest", "BatchRequestError", "BatchResult", "BatchStatus", "JobHandle",
    "LocalBatchProvider", "OpenAIBatchProvider", "PROVIDER_NAMES", "ProviderName",
    "RecoverableBatchProvider", "RemoteBatch", "ResultConverter", "SplitPlan", "Submission",
    "batch_metadata", "call_params", "check_inputs", "check_json", "decide_outcome",
    "each_request", "model_params", "with_errors",
    "plan_batches", "request_ids", "should_flush", "submission_abandoned"
}  # fmt: skip
LANGCHAIN = {
    "AbstractiveContextSummarizer", "BatchRunnable", "SummarizingChatMessageHistory",
    "SummarizingMemoryMiddleware", "SummarizingMemoryTransform", "summarize_messages",
    "CachedChatModel", "ContextSummarizer", "CostCallbackHandler", "LocalChatModel",
    "PrefixCacheOptimizer", "RouterChatModel",
    "PrefixCachedChatModel", "RelevanceThresholdRetriever", "SemanticCache", "cached",
    "track_costs", "with_prefix_cache",
}  # fmt: skip
LLAMAINDEX = {
    "AbstractiveSummarizerPostprocessor", "BatchRunner", "SummarizingMemory",
    "CachedLLM", "ContextSummarizerPostprocessor", "CostEventHandler", "LocalLLM",
    "PrefixCachedLLM", "RouterLLM",
    "RelevanceThresholdPostprocessor", "add_cache_points", "track_costs",
}  # fmt: skip


def test_core_public_names() -> None:
    assert set(costopt_core.__all__) == CORE
    for name in CORE:
        assert hasattr(costopt_core, name), name


def test_langchain_public_names() -> None:
    assert set(langchain_costopt.__all__) == LANGCHAIN
    for name in LANGCHAIN:
        assert hasattr(langchain_costopt, name), name


def test_cache_public_names() -> None:
    import costopt_core.cache as cache

    assert set(cache.__all__) == CACHE
    for name in CACHE:
        assert getattr(cache, name) is not None, name


def test_context_public_names() -> None:
    import costopt_core.context as context

    assert set(context.__all__) == CONTEXT
    for name in CONTEXT:
        assert getattr(context, name) is not None, name


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("costopt_core.memory", MEMORY),
        ("costopt_core.routing", ROUTING),
        ("costopt_core.batch", BATCH),
    ],
)
def test_engine_subpackage_public_names(module: str, names: set[str]) -> None:
    package = importlib.import_module(module)
    assert set(package.__all__) == names
    for name in names:
        assert getattr(package, name) is not None, name


def test_cost_model_public_names() -> None:
    import costopt_core.charts as charts
    import costopt_core.projection as projection
    import costopt_core.workload as workload

    assert set(projection.__all__) == {
        "SCENARIOS",
        "MeasuredRequest",
        "Projection",
        "ScenarioCost",
        "project",
    }
    assert set(workload.__all__) == {
        "WorkloadRequest",
        "WorkloadSample",
        "measure_records",
        "measure_requests",
        "parse_request",
        "read_calibration_samples",
    }
    assert set(charts.__all__) == {"ledger_chart", "projection_chart", "request_mix"}
    for module in (projection, workload, charts):
        for name in module.__all__:
            assert getattr(module, name) is not None, name


def test_local_model_public_names() -> None:
    import costopt_core.local as local
    import langchain_costopt.local as lc_local
    import llamaindex_costopt.local as li_local

    assert set(local.__all__) == {
        "GGUF_FILE",
        "INSTALL_HINT",
        "LOAD_SETTINGS",
        "LOCAL_MODEL_NAME",
        "LocalAnswer",
        "LocalModel",
        "LocalModelConfig",
        "LocalModelError",
        "amortized_price",
        "answer_from_completion",
        "default_model_path",
        "local_model_available",
        "resolve_local_model",
        "to_llama_messages",
    }
    assert lc_local.__all__ == ["LocalChatModel"] and li_local.__all__ == ["LocalLLM"]
    assert issubclass(local.LocalModelError, costopt_core.CostOptError)
    for name in local.__all__:
        assert getattr(local, name) is not None, name


def test_shared_state_public_names() -> None:
    import costopt_core.redis_ledger as redis_ledger

    assert set(redis_ledger.__all__) == {
        "PICO",
        "RedisLedger",
        "from_pico",
        "record_increments",
        "to_pico",
    }
    assert costopt_core.CostLedger.from_redis is not None


def test_served_notes_public_names() -> None:
    import costopt_core.served as served

    assert set(served.__all__) == {
        "PAID_INFO",
        "SERVED",
        "SHARED_INFO",
        "ServedNotes",
        "served_info",
        "served_outcome",
    }
    notes = served.ServedNotes(max_notes=2)
    a, b, c = object(), object(), object()
    for obj in (a, b, c):
        notes.note(obj, {"cache": "exact"})
    assert notes.take(a) is None and notes.take(c) == {"cache": "exact"} and len(notes) == 1
    assert served.served_outcome({"cache": "exact"}) == "cache_exact"
    assert served.served_outcome({"cache": "semantic", "similarity": 0.97}) == "cache_semantic"
    assert served.served_outcome({"tier": "small"}) is None  # a router's route, no cache


def test_otel_public_names() -> None:
    import costopt_core.otel as otel

    for name in ("OTelExporter", "gen_ai_attributes", "costopt_attributes", "provider_name"):
        assert name in otel.__all__ and getattr(otel, name) is not None, name


def test_llamaindex_public_names() -> None:
    import llamaindex_costopt

    assert set(llamaindex_costopt.__all__) == LLAMAINDEX
    for name in LLAMAINDEX:
        assert hasattr(llamaindex_costopt, name), name


def test_every_error_is_a_costopt_error() -> None:
    for name in CORE:
        obj = getattr(costopt_core, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, costopt_core.CostOptError), name


def test_core_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, costopt_core, costopt_core.testing, costopt_core.report, costopt_core.cache,"
        " costopt_core.cache.redis_backend, costopt_core.cli, costopt_core.workload,"
        " costopt_core.projection, costopt_core.charts, costopt_core.local,"
        " costopt_core.redis_ledger, costopt_core.otel;"
        "bad=[m for m in sys.modules if m.startswith(('langchain','llama_index'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
