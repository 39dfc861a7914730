"""The demo's help centre: the articles both RAG halves retrieve from.

A retriever returns its top ``k`` articles whether or not they are about the
question, and every sentence is paid for on every call; both halves of the
demo put the relevance filter and the extractive summarizer between the two
so the model only gets what answers the question.
"""

from __future__ import annotations

import functools
import re

from costopt_core.context import RelevanceConfig

#: The relevance cutoffs both halves use: hits well below the best one are dropped.
RELEVANCE = RelevanceConfig(relative_to_top=0.75)
#: Articles fetched per question, before filtering.
TOP_K = 4

ARTICLES: dict[str, str] = {
    "KB-01 Passwords": (
        "To reset your password, open the sign-in page and choose 'Forgot password'. "
        "We email a reset link that stays valid for 30 minutes. "
        "If the email does not arrive, check your spam folder and the address on your account. "
        "Passwords must be at least 12 characters long. "
        "After a reset every other session is signed out for your safety."
    ),
    "KB-02 Invoices": (
        "Invoices are under Billing > Invoices in the console. "
        "Each invoice can be downloaded as a PDF or a CSV file. "
        "Invoices are issued on the first day of every month. "
        "Only account owners and billing admins can see invoices. "
        "You can add a VAT number before the next invoice is issued."
    ),
    "KB-03 Support hours": (
        "Our support team answers chats from 8:00 to 20:00 CET on weekdays. "
        "Enterprise customers get 24/7 phone support with a one-hour response time. "
        "Outside these hours you can open a ticket and we reply the next working day. "
        "Status updates about incidents are posted on status.acme.example."
    ),
    "KB-04 Account email": (
        "To change the email address of your account, go to Settings > Profile. "
        "We send a confirmation link to the new address before the change takes effect. "
        "Single sign-on users must change their email in their identity provider instead. "
        "Your invoices keep showing the old address until the next billing cycle."
    ),
    "KB-05 Payment methods": (
        "We accept credit cards, SEPA direct debit and bank transfer. "
        "Bank transfer is available for annual plans over 5,000 euros. "
        "Transfers must quote the invoice number as the payment reference. "
        "Card payments are processed by our payment provider and we never store card numbers."
    ),
    "KB-06 Two-factor authentication": (
        "Two-factor authentication is enabled under Settings > Security. "
        "Scan the QR code with an authenticator app and enter the six-digit code. "
        "Save the ten recovery codes somewhere safe: each works once. "
        "Admins can require two-factor authentication for the whole team."
    ),
    "KB-07 Deleting an account": (
        "Account owners can delete an account under Settings > Account > Delete. "
        "Deletion is final after a 14-day grace period. "
        "Running databases are backed up once more and then erased. "
        "Outstanding invoices must be paid before an account can be deleted."
    ),
    "KB-08 Card declined": (
        "A card is usually declined when the bank blocks an unfamiliar merchant. "
        "Upgrades to the Pro plan trigger a 3-D Secure check that some banks reject. "
        "Ask your bank to allow payments to Acme Cloud and try again. "
        "Prepaid cards are not accepted for monthly plans."
    ),
    "KB-09 Region migration": (
        "Databases move between regions with the migration tool under Databases > Migrate. "
        "A migration from the EU region to the US region copies data while the source stays "
        "online. "
        "The final switch-over takes under a minute of read-only time. "
        "Data residency rules may forbid moving personal data out of the EU."
    ),
    "KB-10 API keys": (
        "API keys are created and rotated under Settings > API keys. "
        "After a rotation the old key stops working within five minutes. "
        "Update every service that uses the key, including CI secrets. "
        "Keys are scoped to one project and one role."
    ),
    "KB-11 Single sign-on": (
        "Single sign-on with Okta, Azure AD or Google Workspace is available on the Team plan. "
        "Add the Acme Cloud app in Okta and paste its metadata URL into Settings > SSO. "
        "Users are created on first sign-in and removed when Okta deprovisions them. "
        "Keep one owner account with a password in case the identity provider is down."
    ),
    "KB-12 Autoscaling": (
        "Autoscaling adds replicas when CPU stays above the target for two minutes. "
        "Aggressive scale-in policies can remove warm replicas and raise p99 latency. "
        "A cool-down period of at least five minutes avoids flapping. "
        "Predictive scaling uses last week's traffic to add capacity ahead of peaks."
    ),
    "KB-13 Replication": (
        "Databases can run with one primary and up to five replicas. "
        "Synchronous replication waits for a replica before confirming a write, so no "
        "confirmed write is lost on failover. "
        "Asynchronous replication confirms writes immediately and can lose the last "
        "seconds of writes. "
        "Our Terraform provider exposes replica count and failover policy on the database "
        "resource."
    ),
    "KB-14 Company news": (
        "Acme Cloud opened a new data centre in Frankfurt this spring. "
        "The company was founded in 2015 and employs 400 people. "
        "Our annual user conference takes place every October."
    ),
}


@functools.cache
def article_sentences() -> tuple[str, ...]:
    """Every sentence of the help centre (what a stand-in model may quote)."""
    return tuple(
        sentence
        for text in ARTICLES.values()
        for sentence in re.split(r"(?<=[.!?])\s+", text)
        if sentence
    )
