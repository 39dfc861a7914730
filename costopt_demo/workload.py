"""The demo's workload: a support assistant's questions, with the repetition real traffic has.

Questions recur (a few are asked very often) and come back reworded; some
are easy, some need the frontier model. Models that stand in for paid
providers are scripted fakes, labelled as stand-ins wherever they are shown,
and priced as the models they stand for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from costopt_core import Usage
from costopt_core.testing import ScriptedResponse

SYSTEM_PROMPT = (
    "You are the support assistant of Acme Cloud. Answer in at most three sentences, "
    "cite the help-centre article you used, never invent prices, and hand over to a human "
    "when the customer is angry or asks for a refund. " * 12
)

#: (wordings of one question, difficulty)
QUESTIONS: list[tuple[tuple[str, ...], str]] = [
    (
        ("How do I reset my password?", "how do i reset my password", "How do I reset my password"),
        "easy",
    ),
    (("Where can I download my invoice?", "Where can I download my invoices?"), "easy"),
    (("What are your support hours?", "What are your support hours"), "easy"),
    (("How do I change the email address on my account?",), "easy"),
    (("Can I pay by bank transfer?", "Can I pay by bank transfer"), "easy"),
    (
        (
            "How do I enable two-factor authentication?",
            "How do I enable two factor authentication?",
        ),
        "easy",
    ),
    (("How do I delete my account?",), "easy"),
    (("Why was my card declined when upgrading to the Pro plan?",), "medium"),
    (("How do I migrate my database from the EU region to the US region?",), "medium"),
    (("My API key stopped working after I rotated it, what should I check?",), "medium"),
    (
        ("How do I set up SSO with Okta for my team?", "How do I set up SSO with Okta for my team"),
        "medium",
    ),
    (
        (
            "Our p99 latency doubled after enabling autoscaling. Compare the scaling policies, "
            "explain step by step which settings could cause it, and propose a fix with "
            "the trade-offs of each option.",
        ),
        "hard",
    ),
    (
        (
            "Write a Terraform module that provisions two replicas with a failover policy, "
            "then explain the trade-offs of synchronous vs asynchronous replication and prove "
            "which one bounds data loss.",
        ),
        "hard",
    ),
]

#: tier -> the provider model it stands in for (and is priced as)
TIERS: dict[str, str] = {
    "small": "gpt-4o-mini",
    "mid": "claude-haiku-4-5",
    "frontier": "gpt-4o",
}
_OUT_TOKENS = {"small": 60, "mid": 180, "frontier": 600}
_SYSTEM_TOKENS = 900


def tier_response(tier: str) -> ScriptedResponse:
    """The stand-in answer of one tier, with the usage a real call of that size reports."""
    model = TIERS[tier]
    usage = Usage(
        input_tokens=_SYSTEM_TOKENS + 30,
        output_tokens=_OUT_TOKENS[tier],
        # The static system prompt is served from the provider's prompt cache.
        cache_read_tokens=_SYSTEM_TOKENS if not model.startswith("claude") else 0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
    )
    return ScriptedResponse(
        f"[stand-in for {model}] Here is what the help centre says about that (article KB-12).",
        usage,
        model=model,
    )


@dataclass(frozen=True)
class DemoRequest:
    question: str
    difficulty: str
    tenant: str
    latency_tolerant: bool


def build_workload(n: int, seed: int = 7) -> list[DemoRequest]:
    """``n`` requests from three tenants; popular questions recur, often reworded."""
    rng = random.Random(seed)
    # Zipf-like popularity: the first questions are asked far more often.
    weights = [1.0 / (i + 1) ** 0.9 for i in range(len(QUESTIONS))]
    out = []
    for _ in range(n):
        wordings, difficulty = rng.choices(QUESTIONS, weights=weights)[0]
        out.append(
            DemoRequest(
                question=rng.choice(wordings),
                difficulty=difficulty,
                tenant=rng.choice(["acme-eu", "acme-us", "globex"]),
                latency_tolerant=rng.random() < 0.2,
            )
        )
    return out
