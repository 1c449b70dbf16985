"""The pure parts of monitoring: which trace a produced record carries, the class of a dead letter's
reason, what a batch's log lines are about, and the JSON a log line becomes."""

from __future__ import annotations

import io
import json
import logging

import orjson

from services.runtime.consumer import _key_fields, reason_class
from services.runtime.log import Message, Record
from services.runtime.logging_setup import bound, log_handler
from services.runtime.tracing import carry_causes

A = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
B = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BATCH = b"00-11111111111111111111111111111111-2222222222222222-01"


def produced(cause: str, tenant: str = "t1") -> Message:
    value = orjson.dumps({"id": f"out-{cause}", "tenantid": tenant, "causationid": cause})
    return Message("ar.receivables.v1", b"t1:D1", value)


def traceparent(message: Message) -> bytes | None:
    return dict(message.headers).get("traceparent")


def test_a_produced_record_carries_the_context_of_the_record_that_caused_it() -> None:
    causes = {("t1", "pay-1"): A, ("t1", "pay-2"): B}
    out = carry_causes([produced("pay-1"), produced("pay-2"), produced("inv-3")], causes, 3, BATCH)
    assert [traceparent(m) for m in out] == [A, B, BATCH], "inv-3 carried no context: the batch's"


def test_when_every_input_shares_one_context_every_output_carries_it() -> None:
    out = carry_causes([produced("x"), produced("y")], {("t1", "a"): A, ("t1", "b"): A}, 2, BATCH)
    assert [traceparent(m) for m in out] == [A, A]
    # One of three inputs had that context: an output caused by another gets the batch's.
    out = carry_causes([produced("b")], {("t1", "a"): A}, 3, BATCH)
    assert [traceparent(m) for m in out] == [BATCH]


def test_a_record_that_has_a_context_keeps_it_and_none_is_made_up() -> None:
    own = Message("t", None, b"{}", (("traceparent", B),))
    assert [traceparent(m) for m in carry_causes([own], {("t1", "a"): A}, 2, BATCH)] == [B]
    assert [traceparent(m) for m in carry_causes([produced("a")], {}, 1, None)] == [None]


def test_dead_letter_reasons_fall_in_three_classes() -> None:
    assert reason_class("contract: data.amount: field required") == "contract"
    assert reason_class("rejected: invoice 'A' was cancelled") == "rejected"
    assert reason_class("KeyError: 'x'") == "failed"


def record(key: bytes | None) -> Record:
    return Record("ar.journal.v1", 0, 0, key, b"{}", (), 0)


def test_a_batch_is_about_its_tenant_and_debtor_when_it_has_one() -> None:
    assert _key_fields([record(b"t1:D1"), record(b"t1:D1")]) == {"tenant": "t1", "debtor": "D1"}
    assert _key_fields([record(b"t1:D1"), record(b"t1:D2")]) == {"tenant": "t1", "debtors": 2}
    assert _key_fields([record(b"t1"), record(b"t2:D1")]) == {"debtor": "D1"}
    assert _key_fields([record(None)]) == {}


def test_a_json_line_holds_the_fields_bound_where_it_was_logged() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("arrears.test.json")
    logger.propagate = False
    logger.addHandler(log_handler(stream, "json"))
    logger.setLevel(logging.INFO)
    with bound(tenant="t1", debtor=None):
        with bound(record="pay-1"):
            logger.info("applied %d records", 2)
        logger.info("after")
    logger.info("outside")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "applied 2 records" and first["level"] == "INFO"
    assert (first["tenant"], first["record"], first["logger"]) == ("t1", "pay-1", "arrears.test.json")
    assert "debtor" not in first, "a field bound as None is left out"
    assert second["tenant"] == "t1" and "record" not in second
    assert "tenant" not in third
