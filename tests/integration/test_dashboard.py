"""The operations dashboard in a real browser (Debian's Chromium driven by Playwright) over a stack on
the real broker and database that has replayed the IBM sample's January 2013 invoices day by day: the
figures the page shows are the ones the APIs give, and a panel whose endpoint fails says so."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from contracts.registry import encode_event
from services.dashboard.app import dashboard_app
from services.dashboard.upstreams import over_http
from services.dunning.policies import default_policy
from services.runtime import clock
from services.sample import ibm
from services.stack import ALL, Stack, open_stack, serving
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import from_test_start, settings_for

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ibm-accounts-receivable-2012-2013H1.csv"
ISSUED = (dt.date(2013, 1, 1), dt.date(2013, 2, 1))
LAST = dt.date(2013, 2, 28)  # January's invoices fall due in February: some are overdue by now
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "var" / "artifacts" / "dashboard.png"


def open_on(as_of: dt.date, invoices: list[ibm.SampleInvoice]) -> int:
    """Straight from the CSV: the amount of the invoices issued by `as_of` and settled after it."""
    return sum(i.amount_minor for i in invoices if i.invoice_date <= as_of < i.settled_date)


def dollars(minor: int) -> str:
    """How the page writes US dollars in an en-US browser: $1,234.50."""
    return f"${Decimal(minor) / 100:,.2f}"


async def replay(stack: Stack, tenant: str, erp_key: str, operations_key: str) -> None:
    invoices = [i for i in ibm.load(SAMPLE) if ISSUED[0] <= i.invoice_date < ISSUED[1]]
    days = ibm.events_by_day(invoices, tenant)
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=stack.app("ledger")),
            base_url="http://ledger",
            headers={"X-API-Key": erp_key},
        ) as ledger,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=stack.app("dunning")),
            base_url="http://dunning",
            headers={"X-API-Key": operations_key},
        ) as dunning,
    ):
        response = await dunning.put(
            "/v1/policies/1",
            json={
                "effective_from": ISSUED[0].isoformat(),
                "document": default_policy().model_dump(mode="json"),
            },
        )
        assert response.status_code == 202, response.text
        day = ISSUED[0]
        while day <= LAST:
            if day in days:
                body = b"[" + b",".join(encode_event(e) for e in days[day]) + b"]"
                response = await ledger.post(
                    "/v1/events", content=body, headers={"content-type": "application/json"}
                )
                assert response.status_code == 202, response.text
            await stack.settled()
            await stack.event_log.publish([clock.day_started(tenant, day, dt.datetime.now(dt.UTC))])
            await stack.settled()
            day += dt.timedelta(days=1)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        await chromium.close()


async def opened(browser: Browser, url: str) -> Page:
    page = await browser.new_page(locale="en-US", viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    await page.wait_for_selector("body[data-loaded]")
    assert not errors, errors
    return page


async def text(page: Page, test_id: str) -> str:
    return (await page.get_by_test_id(test_id).inner_text()).strip()


@pytest.mark.skipif(not SAMPLE.is_file(), reason="the shared sample data is not beside the repository")
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium (apt-get install chromium)")
async def test_the_dashboard_shows_what_the_apis_say(
    kafka: KafkaBroker,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    browser: Browser,
    tmp_path: Path,
) -> None:
    invoices = [i for i in ibm.load(SAMPLE) if ISSUED[0] <= i.invoice_date < ISSUED[1]]
    settings = settings_for(
        await new_database(), kafka, send_windows="ignore", letters_dir=tmp_path / "letters"
    )
    async with open_stack(settings, ALL, prepare=from_test_start, outside=True) as stack:
        erp_key = await stack.create_key(tenant, "erp", "erp", on=["ledger"])
        key = await stack.create_key(tenant, "finance", "operations", on=list(ALL))
        await replay(stack, tenant, erp_key, key)

        async with serving(stack.dashboard()) as url:
            async with httpx.AsyncClient(
                base_url=f"{url}/api", headers={"Authorization": f"Bearer {key}"}
            ) as api:
                aging = (await api.get("/ledger/v1/aging")).json()
                day = {"as_of": aging["as_of"]}  # the day the page asks every panel for
                collections = (await api.get("/dunning/v1/kpis/collections", params=day)).json()
                receivables = (await api.get("/ledger/v1/kpis/receivables", params=day)).json()
                worklist = (await api.get("/scoring/v1/worklist", params={"limit": 10})).json()
                refused = await api.get("/ledger/v1/aging", headers={"Authorization": "Bearer ark_0_wrong"})
            assert refused.status_code == 401, "the pass-through forwards the caller's key, and only it"
            assert aging["as_of"] == LAST.isoformat()
            assert aging["currencies"]["USD"]["total_minor"] == open_on(LAST, invoices)

            page = await opened(browser, f"{url}/#key={key}")
            assert "key=" not in page.url, "the key is taken off the address bar"
            assert await text(page, "aging-total-USD") == dollars(open_on(LAST, invoices))
            funnel = collections["funnel"]["USD"]
            assert funnel, "the replay left open cases on the ladder"
            for step, figures in funnel.items():
                assert await text(page, f"funnel-USD-{step}") == f"{figures['cases']:,}"
            first = worklist["items"][0]["debtor_id"]
            assert await page.locator("#worklist tbody tr").first.get_attribute("data-debtor") == first
            assert await page.locator("#worklist tbody tr").count() == len(worklist["items"])
            dso = receivables["currencies"]["USD"][-1]["dso_count_back_days"]
            tile = page.get_by_test_id("kpi-dso-USD").locator(".tile-value")
            assert (await tile.inner_text()) == ("\u2013" if dso is None else f"{dso:.1f} d")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # A panel whose endpoint fails says so; the others still show their figures.
            async def fail(route: Route) -> None:
                await route.fulfill(status=500, json={"detail": "internal error"})

            await page.route("**/api/dunning/v1/kpis/agencies*", fail)
            await page.click("text=Refresh")
            await page.wait_for_selector("#agencies .unavailable")
            assert "Not available" in await page.locator("#agencies").inner_text()
            assert await text(page, "aging-total-USD") == dollars(open_on(LAST, invoices))

            # The fragment may name the day to open on, as the demo's address does.
            january = dt.date(2013, 1, 31)
            page = await opened(browser, f"{url}/#key={key}&as_of={january}")
            assert await text(page, "aging-total-USD") == dollars(open_on(january, invoices))

        # `arrears serve dashboard`: the same pass-through to the services at their base URLs.
        async with (
            serving(stack.app("ledger")) as ledger_url,
            serving(stack.app("scoring")) as scoring_url,
        ):
            remote = settings.model_copy(update={"ledger_url": ledger_url, "scoring_url": scoring_url})
            async with (
                serving(dashboard_app(over_http(remote))) as url,
                httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client,
            ):
                assert (await client.get("/api/ledger/v1/aging")).json() == aging
                assert (await client.get("/api/scoring/v1/worklist?limit=10")).json() == worklist
                assert (await client.get("/api/nowhere/v1/aging")).status_code == 404
