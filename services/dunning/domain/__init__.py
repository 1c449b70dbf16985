"""The collection case of one debtor in one currency, as pure functions: no I/O, no clock, no randomness.

`evolve(case, fact)` applies one record the case learns from (a balance fact of `ar.receivables.v1`,
a contact record of `ar.contacts.v1`) and returns the new case with the case events it caused.
`decide(case, business_date, policy, facts)` says what to do on a business day: the escalation
commands to emit, the pending commands to cancel and the case events, with the case after them.
`due_cases` picks the cases whose next action date has come, or that a policy version new to them
is to plan again, for set-based evaluation. Only a balance fact opens a case (`opens_case`): a
contact record for a case that does not exist changes nothing.

The ladder. Steps due before the due date (courtesy reminders) remind each invoice once, when it
is that many days from falling due. Steps after the due date run one after another, never skipped
by timing and never repeated: the next step is due when the oldest overdue invoice that may be
contacted is as many days past due as the step says (shifted by the amount band and the risk
segment), and no sooner than `min_days_between_steps` after the previous step of another day;
steps of one day go together. A partial payment re-anchors this on the invoices still overdue.
When nothing is overdue any more, the ladder starts over for the next invoice that falls overdue.
A step below its minimum amount, a placement with no eligible agency, or a contact with no
consented channel is passed over, and the ladder moves on. Debtor contacts respect the contact
caps (a step waits for room), go out in the send window of the debtor's time zone and only on
consented channels.

Agencies: a case is with at most one agency. While it is, our own debtor contacts wait; legal
action or a write-off proposal recalls it first. An agency without recovery for
`recall_after_days` is recalled and, when the policy says so, the next best agency not tried yet
gets the case the next day.

Holds: a disputed invoice is left out of every command; a promise to pay, a payment plan,
insolvency, a manual hold and a pause hold the whole case and cancel its pending commands. A
promise not paid by its date plus the grace days, or an instalment missed by more than the grace
days, is broken and resumes the ladder at once with the next step. Paying everything closes the
case and cancels whatever it had not executed.

One message per debtor and day: `decide_debtor` decides all cases of a debtor together, and the
messages to the debtor (e-mail, letter, text message; not call tasks or webhooks) that more than one
of its cases issues for the same business day on the same channels are marked as one bundle: each
member command lists the command ids of all members, sorted, and the notifier sends them as one
message with a section per currency. Every case keeps its own command and pending state.

The shell calls `evolve` for every fact (`fact_of` builds one from an envelope), then `decide` for
the cases `due_cases` returns, after each batch of facts and on every business day; it stores the
case (`dump_case` / `load_case`) and publishes what `decide` returned.

The package, one answer per module: `case` (the state, the facts and what is due), `evolve`,
`decide` (holds, promises, plans, then) `ladder` (the steps and the agencies), `work` (the decision
being built and the commands it emits), `bundles` (one message for the cases of a debtor), `changes`
(case events and the timeline), `ids`, `codec`.
"""

from services.dunning.domain.case import (
    PAYMENT_CAUSES,
    Case,
    CaseInput,
    CaseStatus,
    DebtorFacts,
    Decision,
    Entry,
    Fact,
    Hold,
    Item,
    Pending,
    Placement,
    Plan,
    Promise,
    agency_key,
    case_id,
    currency_of,
    due_cases,
    fact_of,
    is_due,
    new_case,
    opens_case,
    replace,
    status_on,
)
from services.dunning.domain.codec import dump_case, load_case, load_case_json
from services.dunning.domain.decide import decide, decide_debtor
from services.dunning.domain.evolve import evolve
from services.dunning.domain.ids import cancellation_id, case_event_id, command_id

__all__ = [
    "PAYMENT_CAUSES",
    "Case",
    "CaseInput",
    "CaseStatus",
    "DebtorFacts",
    "Decision",
    "Entry",
    "Fact",
    "Hold",
    "Item",
    "Pending",
    "Placement",
    "Plan",
    "Promise",
    "agency_key",
    "cancellation_id",
    "case_event_id",
    "case_id",
    "command_id",
    "currency_of",
    "decide",
    "decide_debtor",
    "due_cases",
    "dump_case",
    "evolve",
    "fact_of",
    "is_due",
    "load_case",
    "load_case_json",
    "new_case",
    "opens_case",
    "replace",
    "status_on",
]
