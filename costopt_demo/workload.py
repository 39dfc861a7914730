"""The demo's workload: support questions, a long shared system prompt, three tiers.

Models that stand in for paid providers are scripted fakes, labelled as
stand-ins everywhere they are shown, and priced as the models they stand for.
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

QUESTIONS: list[tuple[str, str]] = [
    # (question, difficulty: easy | medium | hard)
    ("How do I reset my password?", "easy"),
    ("Where can I download my invoice?", "easy"),
    ("What are your support hours?", "easy"),
    ("How do I change the email address on my account?", "easy"),
    ("Can I pay by bank transfer?", "easy"),
    ("How do I enable two-factor authentication?", "easy"),
    ("Why was my card declined when upgrading to the Pro plan?", "medium"),
    ("How do I migrate my database from the EU region to the US region?", "medium"),
    ("My API key stopped working after I rotated it, what should I check?", "medium"),
    ("How do I set up SSO with Okta for my team?", "medium"),
    (
        "Our p99 latency doubled after enabling autoscaling; compare the scaling policies "
        "and explain which settings could cause it, step by step.",
        "hard",
    ),
    (
        "Write a Terraform module that provisions two replicas with a failover policy and "
        "explain the trade-offs of synchronous vs asynchronous replication.",
        "hard",
    ),
]

#: tier -> (stand-in model name, what it is priced as)
TIERS: dict[str, str] = {
    "small": "gpt-4o-mini",
    "mid": "claude-haiku-4-5",
    "frontier": "gpt-4o",
}
_TIER_OF = {"easy": "small", "medium": "mid", "hard": "frontier"}


@dataclass(frozen=True)
class DemoRequest:
    question: str
    tier: str
    tenant: str
    response: ScriptedResponse


def build_workload(n: int, seed: int = 7) -> list[DemoRequest]:
    """``n`` requests from three tenants; the long system prompt is provider-cached."""
    rng = random.Random(seed)
    out = []
    system_tokens = 900
    for i in range(n):
        q, difficulty = rng.choice(QUESTIONS)
        tier = _TIER_OF[difficulty]
        model = TIERS[tier]
        prompt = system_tokens + len(q) // 4
        out_tokens = {"easy": 60, "medium": 180, "hard": 600}[difficulty]
        # After the first call the provider serves the static prefix from its cache.
        cached = system_tokens if i > 2 else 0
        if model.startswith("claude"):
            usage = Usage(
                input_tokens=prompt,
                output_tokens=out_tokens,
                cache_read_tokens=cached,
                cache_write_5m_tokens=0 if cached else system_tokens,
                cache_write_1h_tokens=0,
            )
        else:
            usage = Usage(input_tokens=prompt, output_tokens=out_tokens, cache_read_tokens=cached)
        answer = f"[stand-in for {model}] Answer to: {q[:40]}"
        out.append(
            DemoRequest(
                question=q,
                tier=tier,
                tenant=rng.choice(["acme-eu", "acme-us", "globex"]),
                response=ScriptedResponse(answer, usage, model=model),
            )
        )
    return out
