"""Standard 5-field cron expressions (``minute hour day-of-month month day-of-week``), in UTC.

What Vixie cron (and ``croniter``) accept: ``*``, numbers, ranges ``a-b``, steps ``*/n``,
``a-b/n`` and ``a/n`` (from *a* to the field's end), lists ``a,b-c,*/d``, month and
weekday names (``jan``-``dec``, ``sun``-``sat``, any case), weekday ``7`` for Sunday, and
the macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``. As in Vixie
cron, when both day fields are restricted (neither starts with ``*``) a day matches if
*either* does; otherwise both must.

``tests/test_schedules.py`` checks :meth:`CronExpr.next_after` against ``croniter``.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    name: index + 1
    for index, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DAYS = {
    name: index for index, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
# (name, low, high, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
#: how far ahead a next run is looked for (leap days on a given weekday recur within 28 years)
_HORIZON_DAYS = 366 * 29


class CronError(ValueError):
    """An invalid cron expression; the message names the field and the reason."""


def _value(text: str, field: str, low: int, high: int, names: dict[str, int]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise CronError(f"{field}: {text!r} is not a number" + (" or a name" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{field}: {value} is out of range ({low}-{high})")
    return value


def _parse_field(text: str, index: int) -> frozenset[int]:
    field, low, high, names = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field}: empty list item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, field, low, high, names)
            end = _value(last, field, low, high, names)
            if start > end:
                raise CronError(f"{field}: range {base!r} runs backwards")
        else:
            start = _value(base, field, low, high, names)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:  # 7 is Sunday too
        values.discard(7)
        values.add(0)
    return frozenset(values)


@dataclass(frozen=True)
class CronExpr:
    """A parsed expression; :meth:`next_after` gives its runs."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_or: bool  # both day fields restricted: either matches

    @classmethod
    def parse(cls, text: str) -> CronExpr:
        expanded = MACROS.get(text.strip().lower(), text)
        parts = expanded.split()
        if len(parts) != 5:
            raise CronError(
                f"{text!r}: a cron expression has 5 fields (minute hour day-of-month month "
                f"day-of-week), not {len(parts)}"
            )
        sets = [_parse_field(part, index) for index, part in enumerate(parts)]
        expr = cls(
            text=" ".join(text.split()),
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=sets[4],
            day_or=not parts[2].startswith("*") and not parts[4].startswith("*"),
        )
        expr.next_after(0)  # "30 0 31 2 *" never runs: refuse it now, not at every tick
        return expr

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)

    def next_after(self, when: float) -> int:
        """The first run strictly after unix time *when*, in unix seconds (UTC)."""
        start = datetime.fromtimestamp((int(when // 60) + 1) * 60, UTC)
        day = start.replace(hour=0, minute=0)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        for _ in range(_HORIZON_DAYS):
            if self._day_matches(day):
                for hour in hours:
                    if day == start.replace(hour=0, minute=0) and hour < start.hour:
                        continue
                    first_minute = (
                        start.minute if (day.date(), hour) == (start.date(), start.hour) else 0
                    )
                    for minute in minutes:
                        if minute >= first_minute:
                            return int(day.replace(hour=hour, minute=minute).timestamp())
            day += timedelta(days=1)
        raise CronError(f"{self.text!r} never runs")
