"""One app replica for the multi-process tests of the shared Redis ledger.

``python -m tests.contract.ledger_worker URL NAMESPACE MODE N ...`` runs in its own
process, with its own engine, and writes through ``RedisLedger`` as a replica would:

- ``record N ID``: record N calls (known tokens and model); prints ``ok k`` after
  the k-th call's record is in Redis (so a killed replica says what it recorded);
- ``spend LIMIT ID``: hammer a shared ``block`` budget of LIMIT dollars with calls
  (estimated from their prompt and max_tokens) until the budget refuses; prints
  ``calls k``.
"""

from __future__ import annotations

import sys
from decimal import Decimal

from costopt_core import Budget, BudgetExceededError, CostEngine, Usage
from costopt_core.redis_ledger import RedisLedger

#: one call: 1,000 input + 100 output tokens on gpt-4o-mini
USAGE = Usage(input_tokens=1000, output_tokens=100)
MODEL = "gpt-4o-mini"


def main(argv: list[str]) -> int:
    url, namespace, mode, n, worker = argv[:5]
    engine = CostEngine()
    shared = RedisLedger(url, namespace=namespace).attach(engine)
    if mode == "record":
        for k in range(int(n)):
            engine.record_call(
                model=MODEL,
                usage=USAGE,
                tenant=f"t{k % 3}",
                tier="small",
                call_id=f"{worker}-{k}",
            )
            if shared.errors:
                print(f"error after {k}", flush=True)
                return 1
            print(f"ok {k + 1}", flush=True)
        return 0
    if mode == "spend":
        limit = Decimal(n)
        engine.ledger.add_budget(Budget(limit_usd=limit, tenant="acme", policy="block"))
        calls = 0
        # the request's max_tokens bounds its output, so the estimate bounds its cost
        estimate = engine.estimate(MODEL, input_tokens=1000, max_output_tokens=100)
        while True:
            call_id = f"{worker}-{calls}"
            try:
                engine.check_budget("acme", estimate, call_id=call_id)
            except BudgetExceededError:
                break
            engine.record_call(model=MODEL, usage=USAGE, tenant="acme", call_id=call_id)
            calls += 1
        print(f"calls {calls}", flush=True)
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
