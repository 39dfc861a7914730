"""The demo's workload: a support assistant's traffic, with the shape real traffic has.

Questions recur (a few are asked very often) and come back reworded; some
are easy, some need the frontier model. Part of the traffic is multi-turn
chat sessions (8 to 20 turns, follow-ups included), and part is e-mail
tickets that may be answered within hours (latency-tolerant, so they can go
through a provider batch API). Requests come from three tenants and are
interleaved as they would arrive.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Kind = Literal["question", "turn", "ticket"]
Framework = Literal["langchain", "llamaindex"]

#: Share of the requests that are turns of multi-turn sessions.
SESSION_SHARE = 0.3
#: Share of the requests that are latency-tolerant e-mail tickets.
TICKET_SHARE = 0.2
MIN_TURNS, MAX_TURNS = 8, 20
TENANTS = ("acme-eu", "acme-us", "globex")

#: tier -> the provider model its stand-in stands for (and is priced as)
TIERS: dict[str, str] = {
    "small": "gpt-4o-mini",
    "mid": "claude-haiku-4-5",
    "frontier": "gpt-4o",
}
#: The tier a real local model (llama.cpp, the ``local`` extra) serves when installed.
LOCAL_TIER = "small"
#: The model latency-tolerant tickets go to, through its provider's batch API.
BATCH_MODEL = TIERS["mid"]

# Long and static on purpose, as production system prompts are: it is the
# prefix the provider's prompt cache serves (OpenAI caches prefixes of 1,024+ tokens).
SYSTEM_PROMPT = """\
You are the support assistant of Acme Cloud, a managed database and hosting platform used by \
small teams and large enterprises in Europe and North America.

# Your job
Answer customer questions about accounts, billing, security, databases and scaling. Use only \
the help-centre articles given with each question. If the articles do not answer the question, \
say so and offer to open a ticket; never guess. Customers rely on your answers to run \
production systems, so a wrong answer is worse than no answer.

# Style
- Answer in at most three short paragraphs, in the language of the question.
- Start with the direct answer, then the steps, then caveats.
- Cite the article you used by its number, for example (KB-03).
- Use the exact names of menus and buttons as the articles spell them, for example \
Settings > Security.
- Do not use marketing language, exclamation marks or emojis.
- When a step is destructive (deleting data, rotating keys, changing regions), say so first.
- Quote numbers (limits, prices, periods) exactly as the article gives them.

# Policies
- Never invent prices, discounts, limits or dates. If a customer asks about a price that is not \
in the articles, point them to the pricing page and the sales team.
- Never ask for or repeat passwords, recovery codes, API keys or card numbers, even partially. \
If a customer pastes one, tell them to rotate it at once (KB-10 for API keys, KB-01 for passwords).
- Refunds, credits and contract changes are handled by humans only: hand over to a human agent \
and tell the customer that a colleague will reply within one working day.
- Hand over to a human when the customer is angry, threatens to leave, mentions legal action, \
reports a security incident or data loss, or asks twice for a human.
- Do not discuss other customers, internal systems, employees or incidents that are not on the \
status page.
- Data residency: personal data of EU customers stays in the EU region unless the customer's \
administrator decides otherwise; never recommend moving it without mentioning this.
- For outages, point to status.acme.example and do not speculate about causes.
- Account changes must be made by the customer; you cannot change settings on their behalf.

# Plans
- Free: one project, one database, community support.
- Team: single sign-on, audit logs, chat support on weekdays.
- Enterprise: 24/7 phone support with a one-hour response time, custom contracts, dedicated \
success manager.
Do not tell customers which plan is right for them beyond these facts; offer a call with sales.

# Help-centre index
KB-01 Passwords: resetting a password, reset links, password rules.
KB-02 Invoices: where invoices are, formats, issue dates, who can see them, VAT numbers.
KB-03 Support hours: chat hours, phone support for Enterprise, tickets, status page.
KB-04 Account email: changing the account email, confirmation links, single sign-on users.
KB-05 Payment methods: cards, SEPA direct debit, bank transfer for annual plans.
KB-06 Two-factor authentication: enabling it, authenticator apps, recovery codes, team policy.
KB-07 Deleting an account: who can delete, grace period, backups, outstanding invoices.
KB-08 Card declined: bank blocks, 3-D Secure on upgrades, prepaid cards.
KB-09 Region migration: the migration tool, switch-over time, data residency.
KB-10 API keys: creating and rotating keys, scopes, updating services after rotation.
KB-11 Single sign-on: Okta, Azure AD, Google Workspace, provisioning, fallback owner account.
KB-12 Autoscaling: scale-out and scale-in policies, cool-down periods, predictive scaling.
KB-13 Replication: primaries and replicas, synchronous and asynchronous replication, Terraform.
KB-14 Company news: data centres, company facts, the annual user conference.

# Answer format
1. One sentence that answers the question.
2. The steps, numbered, if there are steps.
3. Caveats and the article reference.
If you hand over to a human, say: "I am handing this over to a colleague, who will reply \
within one working day." and nothing else after it.

# Examples of good answers
Question: How long is a reset link valid?
Answer: A password reset link stays valid for 30 minutes. If it has expired, request a new one \
from the sign-in page (KB-01).

Question: Can I pay with a prepaid card?
Answer: Prepaid cards are not accepted for monthly plans. You can pay by credit card, SEPA \
direct debit, or by bank transfer on annual plans over 5,000 euros (KB-05, KB-08).

Question: I want my money back for last month.
Answer: I am handing this over to a colleague, who will reply within one working day.

Question: Our API key stopped working this morning.
Answer: A key stops working within five minutes of a rotation. Check under Settings > API keys \
whether it was rotated, then update every service that uses it, including CI secrets (KB-10).
"""

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

#: Follow-ups a customer sends in a chat session after an answer.
FOLLOW_UPS: tuple[str, ...] = (
    "Thanks. Does that also apply to the other people on my team?",
    "I tried that and it did not work. What else can I check?",
    "How long does that take to come into effect?",
    "Is there anything I should do before that, to be safe?",
    "Who on my team is allowed to do that?",
    "Can you go through the steps once more, one by one?",
    "And where exactly do I find that setting?",
)


@dataclass(frozen=True)
class DemoRequest:
    """One request of the workload.

    Attributes:
        question: what the customer wrote.
        difficulty: ``easy`` / ``medium`` / ``hard`` (follow-ups inherit their topic's).
        tenant: the customer's organisation; cached answers never cross tenants.
        latency_tolerant: may be answered within hours (e-mail tickets).
        kind: a one-off ``question``, a ``turn`` of a chat session, or a ``ticket``.
        framework: which half of the application serves it.
        session: the chat session a turn belongs to.
    """

    question: str
    difficulty: str
    tenant: str
    latency_tolerant: bool
    kind: Kind = "question"
    framework: Framework = "langchain"
    session: str | None = None


def _topic(rng: random.Random, weights: list[float]) -> tuple[str, str]:
    wordings, difficulty = rng.choices(QUESTIONS, weights=weights)[0]
    return rng.choice(wordings), difficulty


def _session_lengths(rng: random.Random, turns: int) -> list[int]:
    """Session lengths of 8-20 turns adding up to ``turns`` (none if fewer than 8)."""
    out: list[int] = []
    while turns >= MIN_TURNS:
        length = min(rng.randint(MIN_TURNS, MAX_TURNS), turns)
        if turns - length < MIN_TURNS:
            length = turns  # the remainder is too short for a session of its own
        out.append(length)
        turns -= length
    return out


def _session(
    rng: random.Random, weights: list[float], name: str, length: int, framework: Framework
) -> list[DemoRequest]:
    tenant = rng.choice(TENANTS)
    out: list[DemoRequest] = []
    while len(out) < length:
        question, difficulty = _topic(rng, weights)
        for text in [question, *rng.sample(FOLLOW_UPS, rng.randint(1, 3))]:
            if len(out) < length:
                out.append(
                    DemoRequest(text, difficulty, tenant, False, "turn", framework, session=name)
                )
    return out


def build_workload(n: int, seed: int = 7) -> list[DemoRequest]:
    """``n`` requests: one-off questions, chat-session turns and e-mail tickets, interleaved.

    Popular questions recur, often reworded (Zipf-like popularity); one-off
    questions and sessions alternate between the LangChain and the LlamaIndex
    half; tickets are ``latency_tolerant``.
    """
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** 0.9 for i in range(len(QUESTIONS))]
    lengths = _session_lengths(rng, round(n * SESSION_SHARE))
    tickets = round(n * TICKET_SHARE)
    singles = n - sum(lengths) - tickets

    frameworks: tuple[Framework, Framework] = ("langchain", "llamaindex")
    streams: list[list[DemoRequest]] = [
        _session(rng, weights, f"session-{i}", length, frameworks[i % 2])
        for i, length in enumerate(lengths)
    ]
    loose: list[DemoRequest] = []
    for i in range(singles):
        question, difficulty = _topic(rng, weights)
        loose.append(
            DemoRequest(
                question, difficulty, rng.choice(TENANTS), False, "question", frameworks[i % 2]
            )
        )
    for i in range(tickets):
        question, difficulty = _topic(rng, weights)
        text = f"(e-mail ticket #{4100 + i}) {question}"
        loose.append(DemoRequest(text, difficulty, rng.choice(TENANTS), True, "ticket"))
    rng.shuffle(loose)
    streams.append(loose)

    # Interleave as traffic arrives: the next request comes from a stream
    # picked in proportion to what it has left; each session keeps its order.
    out: list[DemoRequest] = []
    while any(streams):
        live = [s for s in streams if s]
        pick = rng.choices(live, weights=[len(s) for s in live])[0]
        out.append(pick.pop(0))
    return out
