"""Letters as PDF files (reportlab): the claim letter lists every invoice, its due date, the amount,
the late-payment penalty and the deadline, in the debtor's language.

Every letter embeds (a subset of) the font it is set in, shipped with the Python packages Arrears
installs, so it reads the same on any machine and in any viewer: Noto Sans for Latin, Greek and
Cyrillic, Noto Sans SC for Chinese (its Latin letters and digits too).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from contracts.collections import CollectionCommand
from services.notifier.profile import TenantProfile
from services.notifier.rendering import Addressee, format_money, presentation, render_message

TEXT_FONT = ("fontpkg_noto_sans", "files/NotoSans[wdth,wght].ttf")
CJK_FONT = ("justmytype_intl_cjk", "fonts/ofl/notosanssc/NotoSansSC[wght].ttf")
HEADINGS = {
    "en": ("Invoice", "Due date", "Days overdue", "Outstanding", "Penalty", "Total due"),
    "ru": ("Счёт", "Срок оплаты", "Дней просрочки", "Долг", "Неустойка", "Итого к оплате"),
    "zh": ("发票", "到期日", "逾期天数", "未付金额", "滞纳金", "应付合计"),
}
SUMMARY = {
    "en": ("Principal", "Late-payment penalty", "Recovery costs"),
    "ru": ("Основной долг", "Неустойка", "Расходы на взыскание"),
    "zh": ("本金", "滞纳金", "追收费用"),
}


@cache
def font_for(language: str) -> str:
    """The name of the registered font a letter in `language` is set in."""
    name, (package, resource) = ("ArrearsCJK", CJK_FONT) if language == "zh" else ("ArrearsSans", TEXT_FONT)
    path = files(package).joinpath(resource)
    pdfmetrics.registerFont(TTFont(name, str(path)))
    return name


def letter_pdf(
    command: CollectionCommand, addressee: Addressee, creditor: TenantProfile | None = None
) -> bytes:
    """The letter as PDF: the creditor's block (when the tenant has a profile), the addressee, the
    date, the text, the items, the payment details and the signatory."""
    return message_letter_pdf([command], addressee, creditor)


def message_letter_pdf(
    commands: Sequence[CollectionCommand], addressee: Addressee, creditor: TenantProfile | None = None
) -> bytes:
    """The letter of one command, or one letter for a bundle (`render_message`): then the table has
    a section per member, headed by its currency, each with its items and what is asked in it."""
    rendered = render_message(commands, addressee, "letter", creditor)
    language = rendered.language
    font = font_for(language)
    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontName=font, fontSize=10, leading=14)
    title = ParagraphStyle("title", parent=styles["Title"], fontName=font, fontSize=16)
    heads = HEADINGS.get(language, HEADINGS["en"])
    rows: list[list[str]] = [list(heads[:5])]
    lines: list[int] = []
    members = sorted(commands, key=lambda c: (c.total.currency, c.command_id))
    for command in members:
        if len(members) > 1:
            if command is not members[0]:
                lines.append(len(rows))
            rows.append([command.total.currency, "", "", "", ""])
        rows += _section(command, language, heads, lines, len(rows))
    table = Table(rows, colWidths=(40 * mm, 30 * mm, 28 * mm, 40 * mm, 30 * mm), repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, -1), font),
                ("FONTSIZE", (0, 0), (-1, -1), 9),
                ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
                *(("LINEABOVE", (0, row), (-1, row), 0.6, colors.black) for row in lines),
                ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
            ]
        )
    )
    # An address whose first line is the addressee's name (as many registries keep them) names it once.
    postal = list(addressee.postal_address)
    if postal and postal[0].strip() == addressee.name.strip():
        postal.pop(0)
    address = [escape(line) for line in (addressee.name, *postal)]
    sender = ParagraphStyle(
        "sender", parent=body, fontSize=8, leading=10, textColor=colors.HexColor("#444444")
    )
    story = [
        Paragraph(_lines(rendered.blocks.get("sender", "")), sender),
        Spacer(1, 6 * mm),
        Paragraph("<br/>".join(address), body),
        Spacer(1, 10 * mm),
        Paragraph(escape(presentation(members[0], language)["business_date"] or ""), body),
        Spacer(1, 6 * mm),
        Paragraph(escape(rendered.blocks.get("title", "")), title),
        Paragraph(escape(rendered.blocks.get("opening", "")), body),
        Spacer(1, 3 * mm),
        Paragraph(escape(rendered.blocks.get("intro", "")), body),
        Spacer(1, 5 * mm),
        table,
        Spacer(1, 5 * mm),
        Paragraph(escape(rendered.blocks.get("closing", "")), body),
        Spacer(1, 3 * mm),
        Paragraph(escape(rendered.blocks.get("payment", "")), body),
        Spacer(1, 10 * mm),
        Paragraph(_lines(rendered.blocks.get("signature", "")), body),
    ]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=rendered.blocks.get("title", ""),
        subject=" ".join(c.command_id for c in members),
        invariant=1,  # the same command gives the same bytes
        initialFontName=font,  # else the page names Helvetica, which no letter embeds
    )
    document.build(story)
    return buffer.getvalue()


def _section(
    command: CollectionCommand, language: str, heads: tuple[str, ...], lines: list[int], first_row: int
) -> list[list[str]]:
    """The items of one command and, below them, what the debtor is asked for: the principal, what is
    claimed besides it, the total (`lines` gets the rows ruled above)."""
    shown = presentation(command, language)
    rows = [
        [i["invoice_id"], i["due_date"], str(i["days_past_due"]), i["outstanding"], i["penalty"] or ""]
        for i in shown["items"]
    ]
    labels = SUMMARY.get(language, SUMMARY["en"])
    extras = [(labels[1], command.penalty), (labels[2], command.costs)]
    summary = [[labels[0], "", "", shown["total"], ""]] if any(m for _, m in extras) else []
    summary += [[label, "", "", format_money(m, language), ""] for label, m in extras if m]
    summary.append([heads[5], "", "", shown["amount_due"], ""])
    lines.append(first_row + len(rows))
    lines.append(first_row + len(rows) + len(summary) - 1)
    return rows + summary


def _lines(text: str) -> str:
    return "<br/>".join(escape(line) for line in text.splitlines())
