// One function per panel: the answer of an aggregate endpoint in, the panel's content out.
"use strict";

const Panels = (() => {
  const { el } = Charts;

  function unavailable(result) {
    const detail = result && result.body && typeof result.body.detail === "string" ? result.body.detail : "";
    const why = result && result.status ? `HTTP ${result.status}${detail ? `: ${detail}` : ""}` : "no answer";
    return el("p", { class: "unavailable", "data-testid": "unavailable" }, [
      el("strong", { text: "Not available" }), document.createTextNode(` (${why})`),
    ]);
  }

  function nothing(text) {
    return el("p", { class: "nothing", text });
  }

  function legend(labels, colors, figures = [], amounts = []) {
    return el("ul", { class: "legend" }, labels.map((label, i) => el("li", { class: amounts[i] === 0 ? "zero" : null }, [
      el("i", { style: { background: colors[i] } }),
      el("span", { text: label }),
      figures[i] !== undefined ? el("b", { text: figures[i] }) : null,
    ])));
  }

  function aging(report) {
    const currencies = Object.entries(report.currencies || {});
    if (!currencies.length) return [nothing(`Nothing outstanding on ${Format.date(report.as_of)}.`)];
    const labels = report.buckets;
    const colors = Charts.agingColors(labels);
    return currencies.map(([currency, figures]) => {
      const amounts = labels.map((l) => figures.buckets_minor[l] || 0);
      const overdue = amounts.slice(1).reduce((a, b) => a + b, 0);
      return el("div", { class: "aging-row", "data-currency": currency }, [
        el("div", { class: "aging-head" }, [
          el("span", { class: "currency", text: currency }),
          el("span", { class: "total", "data-testid": `aging-total-${currency}`, text: Format.money(figures.total_minor, currency) }),
          el("span", { class: "overdue", text: `${Format.money(overdue, currency)} overdue` }),
        ]),
        Charts.shareBar(
          labels.map((label, i) => ({ label, value: amounts[i], color: colors[i] })),
          (v) => Format.money(v, currency),
        ),
        legend(labels, colors, amounts.map((a) => Format.money(a, currency)), amounts),
      ]);
    });
  }

  function trend(report, width) {
    const currencies = Object.entries(report.currencies || {});
    if (!currencies.length) return [nothing("No month ends yet.")];
    const labels = report.buckets;
    const colors = Charts.agingColors(labels);
    return currencies.map(([currency, data]) => {
      const points = fromFirst(data.points || [], (p) => p.total_minor);
      const chart = Charts.columns({
        categories: points.map((p) => Format.month(p.month)),
        series: labels.map((label, i) => ({
          label, color: colors[i], values: points.map((p) => (p.buckets_minor || {})[label] || 0),
        })),
        width,
        format: (v, full) => (full ? Format.money(v, currency) : Format.moneyShort(v, currency)),
      });
      const last = (data.roll_rates || []).at(-1);
      const rolls = last ? Object.entries(last.rates || {}).filter(([, r]) => r !== null) : [];
      return el("div", { class: "trend-row", "data-currency": currency }, [
        el("h3", { text: currency }),
        chart,
        legend(labels, colors),
        rolls.length ? el("p", { class: "rolls" }, [
          el("span", { text: `Roll rates into the next bucket, ${Format.month(last.month)}: ` }),
          ...rolls.map(([from, rate]) => el("span", { class: "roll", text: `${from} ${Format.fraction(rate)}` })),
        ]) : null,
      ]);
    });
  }

  // The months from the first with anything in it: a tenant's history starts somewhere.
  function fromFirst(months, amount) {
    const first = months.findIndex((m) => amount(m));
    return first < 0 ? months : months.slice(first);
  }

  // Which way is better for each figure: DSO and days delinquent fall, the rates rise.
  const KPIS = [
    { key: "dso", source: "receivables", label: "DSO (count-back)", title: "Days sales outstanding, by the count-back method", show: Format.days, better: -1 },
    { key: "best", source: "receivables", label: "Best possible DSO", show: Format.days, better: -1 },
    { key: "add", source: "receivables", label: "Average days delinquent", title: "ADD: DSO less best possible DSO", show: Format.days, better: -1 },
    { key: "cei", source: "receivables", label: "Collection effectiveness", title: "CEI, collection effectiveness index", show: Format.fraction, better: 1 },
    { key: "current", source: "agingTrend", label: "Share current", show: Format.fraction, better: 1 },
    { key: "kept", source: "collections", label: "Promises kept", show: Format.fraction, better: 1 },
    { key: "cure", source: "collections", label: "Cure rate", show: Format.fraction, better: 1 },
  ];

  // Per currency and figure: the values of the months, oldest first, and the months they are of.
  function series(receivables, agingTrend, collections) {
    const byCurrency = {};
    const put = (currency, key, months, value) => {
      (byCurrency[currency] ||= {})[key] = { months: months.map((m) => m.month), values: months.map(value) };
    };
    if (receivables) {
      for (const [currency, all] of Object.entries(receivables.currencies || {})) {
        const months = fromFirst(all, (m) => m.sales_minor || m.receivables_minor);
        put(currency, "dso", months, (m) => m.dso_count_back_days);
        put(currency, "best", months, (m) => m.best_possible_dso_days);
        put(currency, "add", months, (m) => m.average_days_delinquent);
        put(currency, "cei", months, (m) => (m.cei_percent === null ? null : m.cei_percent / 100));
      }
    }
    if (agingTrend) {
      for (const [currency, data] of Object.entries(agingTrend.currencies || {})) {
        put(currency, "current", fromFirst(data.points || [], (p) => p.total_minor), (p) => p.share_current);
      }
    }
    if (collections) {
      for (const [currency, data] of Object.entries(collections.currencies || {})) {
        const months = fromFirst(data.months || [], (m) => m.promises_made || m.promises_due || m.cases_closed);
        put(currency, "kept", months, (m) => m.promise_kept_rate);
        put(currency, "cure", months, (m) => m.cure_rate);
      }
    }
    return byCurrency;
  }

  const known = (v) => v !== null && v !== undefined;

  function change(values, kpi) {
    const shown = values.filter(known);
    if (shown.length < 2 || !known(values.at(-1))) return null;
    const delta = shown.at(-1) - shown.at(-2);
    if (Math.abs(delta) < 1e-9) return el("span", { class: "delta flat", text: "± 0" });
    const good = Math.sign(delta) === kpi.better;
    const size = kpi.show === Format.days ? Format.days(Math.abs(delta)) : `${(Math.abs(delta) * 100).toFixed(1)} pt`;
    return el("span", { class: `delta ${good ? "good" : "bad"}`, text: `${delta > 0 ? "▲" : "▼"} ${size}` });
  }

  function tile(kpi, figure, available) {
    if (!figure) {
      return [el("span", { class: "tile-value na", text: available ? "–" : "not available" })];
    }
    const { values, months } = figure;
    let at = values.length - 1;
    while (at >= 0 && !known(values[at])) at -= 1;
    return [
      el("span", { class: "tile-value", text: at < 0 ? "–" : kpi.show(values[at]) }),
      // The latest month may have no value yet (nothing due, nothing sold): the one shown says its month.
      at >= 0 && at < values.length - 1
        ? el("span", { class: "tile-when", text: `in ${Format.month(months[at])}` })
        : change(values, kpi),
      Charts.sparkline(values),
    ];
  }

  function tiles(sources) {
    const byCurrency = series(sources.receivables, sources.agingTrend, sources.collections);
    const currencies = Object.keys(byCurrency).sort();
    if (!currencies.length) return [nothing("No months with figures yet.")];
    return currencies.map((currency) => el("div", { class: "tile-row", "data-currency": currency }, [
      el("span", { class: "currency", text: currency }),
      el("div", { class: "tiles" }, KPIS.map((kpi) => el("div", { class: "tile", "data-testid": `kpi-${kpi.key}-${currency}` }, [
        el("span", { class: "tile-label", text: kpi.label, title: kpi.title || kpi.label }),
        ...tile(kpi, byCurrency[currency][kpi.key], Boolean(sources[kpi.source])),
      ]))),
    ]));
  }

  const NO_STEP = "none"; // open cases the ladder has not reached a step for

  function funnel(report) {
    const currencies = Object.entries(report.funnel || {});
    if (!currencies.length) return [nothing("No open cases.")];
    return currencies.map(([currency, steps]) => el("div", { class: "funnel-row", "data-currency": currency }, [
      el("h3", { text: currency }),
      Charts.bars(Object.entries(steps).map(([step, figures]) => ({
        key: `${currency}:${step}`,
        label: step === NO_STEP ? "No step yet" : Format.words(step),
        value: figures.cases,
        figures: [
          el("b", { "data-testid": `funnel-${currency}-${step}`, text: Format.count(figures.cases) }),
          el("span", { text: ` ${figures.cases === 1 ? "case" : "cases"} · ${Format.money(figures.overdue_minor, currency)} overdue` }),
        ],
      }))),
    ]));
  }

  function table(headings, rows) {
    return el("table", {}, [
      el("thead", {}, [el("tr", {}, headings.map(([text, numeric]) => el("th", { class: numeric ? "num" : null, text })))]),
      el("tbody", {}, rows),
    ]);
  }

  function agencies(report) {
    const rows = report.agencies || [];
    if (!rows.length) return [nothing("No cases placed with an agency yet.")];
    return [table(
      [["Agency"], ["Segment"], ["Placed", true], ["Amount placed", true], ["Recovered", true], ["Recovery rate", true],
        ["Reported", true], ["Difference", true], ["Days to recover", true], ["Fees", true]],
      rows.map((a) => el("tr", { "data-agency": a.agency_id }, [
        el("td", { text: a.agency_id }),
        el("td", { text: a.segment || "all" }),
        el("td", { class: "num", text: Format.count(a.placed_cases) }),
        el("td", { class: "num", text: Format.money(a.placed_minor, a.currency) }),
        el("td", { class: "num", text: Format.money(a.recovered_minor, a.currency) }),
        el("td", { class: "num rate" }, [
          el("span", { class: "rate-bar", style: { width: `${Math.round(100 * Math.min(a.recovery_rate || 0, 1))}%` } }),
          el("span", { text: Format.fraction(a.recovery_rate) }),
        ]),
        el("td", { class: "num", text: Format.money(a.reported_minor, a.currency) }),
        el("td", { class: `num${a.difference_minor ? " warn" : ""}`, text: Format.money(a.difference_minor, a.currency) }),
        el("td", { class: "num", text: Format.days(a.average_days_to_recover) }),
        el("td", { class: "num", text: Format.money(a.fees_minor, a.currency) }),
      ])),
    )];
  }

  // A reason already said inside an earlier one is left out.
  function distinct(reasons) {
    return reasons.filter((r, i) => !reasons.slice(0, i).some((earlier) => earlier.includes(r)));
  }

  function worklist(report) {
    const items = report.items || [];
    if (!items.length) return [nothing("Nobody to call: no debtor is overdue.")];
    return [table(
      [["#"], ["Debtor"], ["Risk"], ["Days late"], ["Next action"], ["At stake", true], ["Pays", true],
        ["Expected net", true], ["Why"]],
      items.map((i) => el("tr", { "data-debtor": i.debtor_id }, [
        el("td", { text: String(i.rank) }),
        el("td", { class: "debtor", text: i.debtor_id }),
        el("td", {}, [el("span", { class: `chip ${i.segment}`, text: i.segment })]),
        el("td", { text: i.bucket }),
        el("td", { text: Format.words(i.action) }),
        el("td", { class: "num", text: Format.money(i.amount_at_stake_minor, i.currency) }),
        el("td", { class: "num", text: Format.fraction(i.probability_of_payment) }),
        el("td", { class: "num", text: Format.money(i.expected_value_minor, i.currency) }),
        el("td", { class: "reasons", text: distinct(i.reasons || []).slice(0, 2).join("; ") }),
      ])),
    )];
  }

  // /readyz as it is now ({"ready", "checks": {…, "lag": {…}}}) or as it was (a flat map of checks).
  function lag(answers) {
    return [el("div", { class: "lag" }, Object.entries(answers).map(([service, result]) => {
      const body = result.body && typeof result.body === "object" ? result.body : null;
      if (!body || result.status === 0) {
        return el("div", { class: "lag-service" }, [el("h3", { text: Format.words(service) }), unavailable(result)]);
      }
      const checks = body.checks && typeof body.checks === "object" ? body.checks : body;
      const ready = typeof body.ready === "boolean" ? body.ready : result.ok;
      const groups = (checks.lag && checks.lag.groups) || null;
      const threshold = checks.lag && checks.lag.threshold;
      return el("div", { class: "lag-service", "data-service": service }, [
        el("h3", {}, [
          document.createTextNode(Format.words(service)),
          el("span", { class: `chip ${ready ? "ok" : "down"}`, text: ready ? "ready" : "not ready" }),
        ]),
        groups && Object.keys(groups).length
          ? Charts.bars(Object.entries(groups).map(([group, records]) => ({
            key: group,
            label: group,
            value: records,
            color: threshold && records > threshold ? "#c43d35" : "#3b6ea8",
            figures: [el("b", { text: Format.count(records) })],
          })))
          : nothing(groups ? "no consumer groups" : "lag not reported"),
      ]);
    }))];
  }

  return { unavailable, aging, trend, tiles, funnel, agencies, worklist, lag };
})();
