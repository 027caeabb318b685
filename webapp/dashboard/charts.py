"""Chart geometry for the dashboard: numbers in, SVG coordinates out (templates draw them).

Charts are inline SVG drawn on the server: no chart library, no script, and no inline
styles (the CSP forbids them); colours come from CSS classes in static/css/app.css.
"""

import math
from dataclasses import dataclass

from webapp.dashboard.stats import SERIES, Period, Window

WIDTH, HEIGHT = 720, 200
# Margins for the axis labels, wide enough for the larger type that keeps them readable when
# the chart is scaled down to a phone's width (static/css/app.css, .chart .axis).
LEFT, RIGHT, TOP, BOTTOM = 50, 8, 18, 34
BAR_FILL = 0.8  # share of a period's slot its bar takes


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    series: str


@dataclass(frozen=True)
class Column:
    rects: list[Rect]
    x: float  # the period's slot, for a hover area over the whole height
    width: float
    title: str
    total: int  # runs in the period


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class BarChart:
    columns: list[Column]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    peak: int  # the busiest period's runs
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    raise AssertionError("unreachable")


def _count(value: int) -> str:
    """An axis count in at most four characters: 500, 5k, 2.5M."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return str(value)


def _ago(seconds: int, in_hours: bool) -> str:
    return f"−{seconds / 3600:g} h" if in_hours else f"−{seconds / 60:g} min"


def runs_chart(periods: list[Period], window: Window) -> BarChart:
    """Stacked bars: one column per period, one segment per series (SERIES order, bottom up)."""
    peak = max((p.total for p in periods), default=0)
    top_value = nice_ceiling(peak)
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / len(periods)
    scale = plot_height / top_value
    columns = []
    for i, period in enumerate(periods):
        x = LEFT + i * slot
        bar_x = x + slot * (1 - BAR_FILL) / 2
        base = HEIGHT - BOTTOM
        rects = []
        for series in SERIES:
            count = period.counts[series]
            if count:
                height = count * scale
                base -= height
                rects.append(Rect(round(bar_x, 2), round(base, 2), round(slot * BAR_FILL, 2), round(height, 2), series))
        parts = ", ".join(f"{period.counts[s]} {s}" for s in SERIES if period.counts[s])
        when = period.start.strftime("%H:%M UTC")
        title = f"{when}: {period.total} run{'s' if period.total != 1 else ''}" + (f" ({parts})" if parts else "")
        columns.append(Column(rects, round(x, 2), round(slot, 2), title, period.total))
    values = [0, top_value // 2, top_value] if top_value % 2 == 0 else [0, top_value]
    y_ticks = [Tick(round(HEIGHT - BOTTOM - v * scale, 2), _count(v)) for v in values]
    step = max(len(periods) // 4, 1)
    in_hours = len(periods) * window.seconds >= 2 * 3600
    x_ticks = [
        Tick(round(LEFT + i * slot, 2), _ago((len(periods) - i) * window.seconds, in_hours))
        for i in range(0, len(periods), step)
    ]
    x_ticks.append(Tick(WIDTH - RIGHT, "now"))
    return BarChart(columns, y_ticks, x_ticks, peak)


def share(value: float, largest: float) -> float:
    """A horizontal bar's length in percent of the largest one (0-100)."""
    return round(100 * value / largest, 1) if largest else 0.0
