"""The initial open-item load: an ERP's CSV export turned into journal events, the whole file or none.

Columns (header row required; names are matched ignoring case and surrounding blanks): debtor_id,
invoice_id, issue_date, due_date, amount, currency, and optionally amount_paid and debtor_name. Amounts
are in major units ("1234.50"); dates are ISO 8601 (YYYY-MM-DD). Each line becomes
`ar.invoice.issued.v1` and, when something is paid already, `ar.payment.received.v1` allocated to that
invoice and valued at `as_of` (or at the issue date, if later). A debtor given a `debtor_name` is
registered (`ar.debtor.registered.v1`) once per file, at the first line that names it.

Invoice identity is scoped to the debtor. The ledger keeps a debtor's invoices in that debtor's own
state (keyed by tenant and debtor), and everything that names an invoice does so within its debtor:
allocations, write-offs, the balance facts and the dunning and notifier tables downstream. So two
debtors may use the same invoice number, as ERPs with several numbering ranges do, and each debtor's
statement shows its own invoice. The event ids derive from the debtor id AND the invoice id: a UUID 5
of both, unambiguous whatever characters the ids contain, and always short enough for an event id.
The payment of an amount already paid is `import:{invoice_id}` in the debtor's ledger (the UUID
instead, when that would be longer than an identifier may be).

The file is checked whole before anything is written. Every error names its line (as a text editor
counts them: the header is line 1, a quoted value over several lines counts from its first) and the
column: a value that does not parse, a line with fewer or more fields than the header, an invoice of
a debtor on two lines, a debtor given two names. The ledger API then claims every event id of the file
in one transaction: loading the same file again changes nothing and reports what was already there,
and a line whose invoice, payment or debtor was loaded before with other content refuses the whole
file, naming that line (`conflict_errors`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from contracts.envelope import IDENTIFIER_PATTERN, DebtorId, Envelope, Identifier
from contracts.journal import Allocation, DebtorProfile, InvoiceIssued, PaymentReceived
from contracts.money import MAX_MINOR, Money, check_currency, format_major, parse_major
from contracts.registry import ContractError, FieldError, make_event
from contracts.scalars import FIRST_DATE, LAST_DATE, PATTERN_MEANINGS

REQUIRED = ("debtor_id", "invoice_id", "issue_date", "due_date", "amount", "currency")
OPTIONAL = ("amount_paid", "debtor_name")
SOURCE = "arrears/ledger/import"
IMPORT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://arrears.invalid/ledger/import")
"""Namespace of the UUID 5 in the event ids of a load; changing it would make every file new again."""

_MAX_ID = 128
_DEBTOR_ID: TypeAdapter[str] = TypeAdapter(DebtorId)
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
_MEANINGS = {
    **PATTERN_MEANINGS,
    IDENTIFIER_PATTERN: "must start with a letter or digit and hold only letters, digits and . _ : / @ + -",
}
_INVOICE_COLUMNS = {"invoice_id": "invoice_id", "issue_date": "issue_date", "due_date": "due_date"}

Kind = Literal["debtor", "invoice", "payment"]
T = TypeVar("T")


@dataclass(frozen=True)
class LineError:
    """What is wrong with one line of the file, and in which column (None: the line as a whole)."""

    line: int
    column: str | None
    message: str

    @property
    def field(self) -> str:
        return f"line {self.line}" + (f", column {self.column}" if self.column else "")

    def as_json(self) -> dict[str, Any]:
        """One entry of a 422's `detail`: `field` and `message` as every 422 of the API has them."""
        return {"line": self.line, "column": self.column, "field": self.field, "message": self.message}


class OpenItemsError(ContractError):
    """A file refused whole; `lines` name every wrong line and column."""

    def __init__(self, errors: list[LineError]) -> None:
        self.lines = errors
        super().__init__([FieldError(e.field, e.message) for e in errors])


@dataclass(frozen=True)
class FileEvent:
    """One event of a load and the line it came from."""

    event: Envelope[Any]
    kind: Kind
    line: int
    debtor_id: str
    invoice_id: str | None = None


@dataclass(frozen=True)
class OpenItemFile:
    lines: int
    """Lines of data (blank lines not counted)."""
    items: tuple[FileEvent, ...]

    @property
    def events(self) -> list[Envelope[Any]]:
        return [item.event for item in self.items]


def import_key(*parts: str) -> str:
    """The UUID 5 that stands for a debtor, or a debtor's invoice, in the ids of a load."""
    return str(uuid.uuid5(IMPORT_NAMESPACE, json.dumps(parts)))


def debtor_event_id(debtor_id: str) -> str:
    return f"import.debtor:{import_key(debtor_id)}"


def invoice_event_id(debtor_id: str, invoice_id: str) -> str:
    return f"import.invoice:{import_key(debtor_id, invoice_id)}"


def payment_event_id(debtor_id: str, invoice_id: str) -> str:
    return f"import.payment:{import_key(debtor_id, invoice_id)}"


def payment_id(debtor_id: str, invoice_id: str) -> str:
    readable = f"import:{invoice_id}"
    return readable if len(readable) <= _MAX_ID else f"import:{import_key(debtor_id, invoice_id)}"


# --- one line ---------------------------------------------------------------------------------------


def _pydantic_message(error: ErrorDetails) -> str:
    if error["type"] == "string_pattern_mismatch":
        meaning = _MEANINGS.get(str(error.get("ctx", {}).get("pattern")))
        if meaning is not None:
            return meaning
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _date(value: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        reason = "" if str(exc).startswith("Invalid isoformat") else f": {exc}"
        raise ValueError(f"{value!r} is not a date as YYYY-MM-DD{reason}") from None
    if not FIRST_DATE <= day <= LAST_DATE:
        raise ValueError(f"{value!r} is not between {FIRST_DATE} and {LAST_DATE}")
    return day


def _currency(value: str) -> str:
    return check_currency(value.upper())


def _minor(value: str, currency: str) -> int:
    minor = parse_major(value, currency)
    if abs(minor) > MAX_MINOR:
        raise ValueError(f"{value!r} is too large: at most {format_major(MAX_MINOR, currency)}")
    return minor


@dataclass(frozen=True)
class _Parsed:
    debtor_id: str
    invoice: InvoiceIssued
    paid: int
    name: str | None


class _Line:
    def __init__(self, number: int, values: Mapping[str, str]) -> None:
        self.number = number
        self.values = values
        self.errors: list[LineError] = []

    def value(self, column: str) -> str:
        return self.values.get(column, "").strip()

    def fail(self, column: str | None, message: str) -> None:
        self.errors.append(LineError(self.number, column, message))

    def parse(self, column: str, convert: Callable[[str], T], required: bool = True) -> T | None:
        value = self.value(column)
        if not value:
            if required:
                self.fail(column, f"empty; every line needs its {column}")
            return None
        try:
            return convert(value)
        except ValidationError as exc:
            for error in exc.errors():
                self.fail(column, _pydantic_message(error))
        except ValueError as exc:
            self.fail(column, str(exc))
        return None

    def read(self, as_of: dt.date | None) -> _Parsed | None:
        debtor_id = self.parse("debtor_id", _DEBTOR_ID.validate_python)
        invoice_id = self.parse("invoice_id", _IDENTIFIER.validate_python)
        issue_date = self.parse("issue_date", _date)
        due_date = self.parse("due_date", _date)
        currency = self.parse("currency", _currency)
        amount = self.parse("amount", lambda v: _minor(v, currency)) if currency else None
        if amount is not None and amount <= 0:
            self.fail("amount", f"{self.value('amount')!r}: an open item's amount must be positive")
        paid = self.parse("amount_paid", lambda v: _minor(v, currency), required=False) if currency else 0
        if paid and amount is not None and not 0 < paid <= amount:
            given = self.value("amount_paid")
            self.fail("amount_paid", f"{given!r} must be more than 0 and at most the amount")
        if paid and as_of is None:
            self.fail("amount_paid", "an amount paid needs the as_of date of the load (query parameter)")
        name = self.parse("debtor_name", lambda v: DebtorProfile(name=v).name, required=False)
        if issue_date is not None and due_date is not None and due_date < issue_date:
            self.fail("due_date", f"{due_date} is before the issue date {issue_date}")
        if self.errors or debtor_id is None or invoice_id is None or issue_date is None:
            return None
        if due_date is None or currency is None or amount is None:
            return None
        try:
            invoice = InvoiceIssued(
                invoice_id=invoice_id,
                issue_date=issue_date,
                due_date=due_date,
                amount=Money(amount_minor=amount, currency=currency),
            )
        except ValidationError as exc:
            for error in exc.errors():
                loc = error["loc"]
                column = _INVOICE_COLUMNS.get(str(loc[0]), "amount") if loc else "due_date"
                self.fail(column, _pydantic_message(error))
            return None
        return _Parsed(debtor_id, invoice, paid or 0, name)


# --- the file ---------------------------------------------------------------------------------------


def _header(fields: list[str]) -> tuple[list[str], list[LineError]]:
    names = [f.strip().lower() for f in fields]
    errors = [LineError(1, c, f"the header has no column {c}") for c in REQUIRED if c not in names]
    counts = Counter(names)
    errors += [
        LineError(1, c, f"the header names column {c} {counts[c]} times")
        for c in (*REQUIRED, *OPTIONAL)
        if counts[c] > 1
    ]
    return names, errors


def _shape_errors(number: int, fields: list[str], header: list[str]) -> list[LineError]:
    """A line with fewer fields than the header (the columns Arrears reads that it lacks), or with more:
    its values cannot be trusted to be in their columns."""
    if len(fields) < len(header):
        size = f"line {number} has {len(fields)} fields, the header {len(header)}"
        read = (*REQUIRED, *OPTIONAL)
        return [LineError(number, c, f"missing: {size}") for c in header[len(fields) :] if c in read]
    if len(fields) > len(header):
        return [
            LineError(
                number,
                None,
                f"{len(fields)} fields, but the header names {len(header)} columns"
                " (quote a value that contains a comma)",
            )
        ]
    return []


def open_items_from_csv(
    text: str, tenant_id: str, as_of: dt.date | None, now: dt.datetime, max_errors: int = 100
) -> OpenItemFile:
    """The file's events with the line each came from, or `OpenItemsError` naming every wrong line
    and column (up to `max_errors` of them): nothing of a file with an error is loaded."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header_fields = next(reader, [])
    except csv.Error as exc:
        raise OpenItemsError([LineError(1, None, f"not CSV: {exc}")]) from None
    header, errors = _header(header_fields)
    if errors:
        raise OpenItemsError(errors)
    common: dict[str, Any] = {"tenant_id": tenant_id, "source": SOURCE, "time": now}
    items: list[FileEvent] = []
    first_line_of: dict[tuple[str, str], int] = {}
    names: dict[str, tuple[str, int]] = {}
    lines = 0
    end = reader.line_num
    while True:
        number = end + 1
        try:
            fields = next(reader, None)
        except csv.Error as exc:
            errors.append(LineError(number, None, f"not CSV: {exc}"))
            break
        end = reader.line_num
        if fields is None:
            break
        if not any(f.strip() for f in fields):
            continue
        lines += 1
        shape = _shape_errors(number, fields, header)
        if shape:
            errors += shape
        else:
            line = _Line(number, dict(zip(header, fields, strict=False)))
            parsed = line.read(as_of)
            _check_repeats(line, first_line_of, names)
            errors += line.errors
            if parsed is not None and not errors:
                items += _line_events(number, parsed, as_of, names, common)
        if len(errors) >= max_errors:
            note = f"checked up to this line: {len(errors)} errors; correct them and send the file again"
            errors.append(LineError(number, None, note))
            break
    if errors:
        raise OpenItemsError(errors)
    return OpenItemFile(lines, tuple(items))


def _check_repeats(
    line: _Line, first_line_of: dict[tuple[str, str], int], names: dict[str, tuple[str, int]]
) -> None:
    """The same invoice of a debtor on an earlier line; another name for a debtor named earlier."""
    debtor_id, invoice_id, name = line.value("debtor_id"), line.value("invoice_id"), line.value("debtor_name")
    if debtor_id and invoice_id:
        first = first_line_of.setdefault((debtor_id, invoice_id), line.number)
        if first != line.number:
            line.fail(
                "invoice_id",
                f"invoice {invoice_id} of debtor {debtor_id} is on line {first} and on line {line.number};"
                " a file may hold each invoice of a debtor once",
            )
    if debtor_id and name:
        named, at = names.setdefault(debtor_id, (name, line.number))
        if named != name:
            line.fail(
                "debtor_name",
                f"debtor {debtor_id} is named {named!r} on line {at} and {name!r} on line {line.number};"
                " give a debtor one name in the file",
            )


def _line_events(
    number: int,
    parsed: _Parsed,
    as_of: dt.date | None,
    names: Mapping[str, tuple[str, int]],
    common: Mapping[str, Any],
) -> list[FileEvent]:
    debtor_id, invoice = parsed.debtor_id, parsed.invoice
    events: list[FileEvent] = []
    if parsed.name is not None and names[debtor_id][1] == number:  # the first line that names it
        profile = DebtorProfile(name=parsed.name)
        registered = make_event(
            "ar.debtor.registered.v1",
            profile,
            event_id=debtor_event_id(debtor_id),
            debtor_id=debtor_id,
            **common,
        )
        events.append(FileEvent(registered, "debtor", number, debtor_id))
    issued = make_event(
        "ar.invoice.issued.v1",
        invoice,
        event_id=invoice_event_id(debtor_id, invoice.invoice_id),
        debtor_id=debtor_id,
        **common,
    )
    events.append(FileEvent(issued, "invoice", number, debtor_id, invoice.invoice_id))
    if parsed.paid:
        assert as_of is not None  # `read` refuses an amount paid without it
        paid = Money(amount_minor=parsed.paid, currency=invoice.amount.currency)
        payment = PaymentReceived(
            payment_id=payment_id(debtor_id, invoice.invoice_id),
            value_date=max(as_of, invoice.issue_date),
            amount=paid,
            allocations=[Allocation(invoice_id=invoice.invoice_id, amount=paid)],
        )
        received = make_event(
            "ar.payment.received.v1",
            payment,
            event_id=payment_event_id(debtor_id, invoice.invoice_id),
            debtor_id=debtor_id,
            **common,
        )
        events.append(FileEvent(received, "payment", number, debtor_id, invoice.invoice_id))
    return events


# --- what the ledger made of a load ------------------------------------------------------------------


def conflict_errors(loaded: OpenItemFile, conflicting: Collection[str]) -> list[LineError]:
    """The lines whose invoice, payment or debtor registration an earlier load gave other content."""
    errors: list[LineError] = []
    for item in loaded.items:
        if item.event.id not in conflicting:
            continue
        invoice = f"invoice {item.invoice_id} of debtor {item.debtor_id}"
        if item.kind == "invoice":
            errors.append(
                LineError(
                    item.line,
                    "invoice_id",
                    f"{invoice} was loaded before with another issue date, due date, amount or currency;"
                    " nothing of this file was loaded (correct the line, or change the invoice with"
                    " ar.invoice.adjusted.v1)",
                )
            )
        elif item.kind == "payment":
            errors.append(
                LineError(
                    item.line,
                    "amount_paid",
                    f"the amount paid on {invoice} was loaded before with another amount or value date"
                    " (as_of); nothing of this file was loaded",
                )
            )
        else:
            errors.append(
                LineError(
                    item.line,
                    "debtor_name",
                    f"debtor {item.debtor_id} was registered by an earlier load with another name;"
                    " nothing of this file was loaded (leave debtor_name empty, or post"
                    " ar.debtor.updated.v1 to rename the debtor)",
                )
            )
    return errors


def load_report(loaded: OpenItemFile, statuses: Mapping[str, str]) -> dict[str, Any]:
    """The answer to an accepted load: what it added and what an earlier load had added already.
    `statuses` maps each event id to "accepted" or "duplicate"."""
    plural = {"debtor": "debtors_registered", "invoice": "invoices", "payment": "payments"}
    loaded_now = dict.fromkeys(plural.values(), 0)
    present = dict.fromkeys(plural.values(), 0)
    for item in loaded.items:
        counts = loaded_now if statuses[item.event.id] == "accepted" else present
        counts[plural[item.kind]] += 1
    return {
        "lines": loaded.lines,
        "loaded": loaded_now,
        "already_present": present,
        "events": len(loaded.items),
        "accepted": sum(loaded_now.values()),
        "duplicates": sum(present.values()),
    }
