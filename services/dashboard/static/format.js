// Numbers as a finance reader expects them: amounts from integer minor units in the currency's own
// decimals, rates as percentages, days with one decimal. Everything the page prints goes through here.
"use strict";

const Format = (() => {
  const locale = navigator.language || "en-US";
  const currencyFormats = new Map();

  function currencyFormat(currency, compact) {
    const key = currency + (compact ? ":compact" : "");
    if (!currencyFormats.has(key)) {
      const options = { style: "currency", currency };
      if (compact) Object.assign(options, { notation: "compact", maximumFractionDigits: 1 });
      currencyFormats.set(key, new Intl.NumberFormat(locale, options));
    }
    return currencyFormats.get(key);
  }

  function decimals(currency) {
    return currencyFormat(currency, false).resolvedOptions().maximumFractionDigits;
  }

  // Minor units are exact integers; dividing once for display is the only floating step.
  function money(minor, currency) {
    if (minor === null || minor === undefined) return "–";
    return currencyFormat(currency, false).format(minor / 10 ** decimals(currency));
  }

  function moneyShort(minor, currency) {
    if (minor === null || minor === undefined) return "–";
    return currencyFormat(currency, true).format(minor / 10 ** decimals(currency));
  }

  const integer = new Intl.NumberFormat(locale);
  const oneDecimal = new Intl.NumberFormat(locale, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const percent = new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 1 });

  function count(n) {
    return n === null || n === undefined ? "–" : integer.format(n);
  }

  function days(d) {
    return d === null || d === undefined ? "–" : `${oneDecimal.format(d)} d`;
  }

  function fraction(f) {
    return f === null || f === undefined ? "–" : percent.format(f);
  }

  function month(yyyyMm) {
    const [year, m] = yyyyMm.split("-").map(Number);
    return new Date(Date.UTC(year, m - 1, 1)).toLocaleDateString(locale, {
      month: "short", year: "2-digit", timeZone: "UTC",
    });
  }

  function date(iso) {
    if (!iso) return "";
    const [year, m, d] = iso.split("-").map(Number);
    return new Date(Date.UTC(year, m - 1, d)).toLocaleDateString(locale, {
      day: "numeric", month: "short", year: "numeric", timeZone: "UTC",
    });
  }

  function words(identifier) {
    const text = String(identifier).replaceAll("_", " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  return { money, moneyShort, count, days, fraction, month, date, words };
})();
