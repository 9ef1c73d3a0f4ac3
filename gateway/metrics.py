"""Process counters in the Prometheus text format (one set per process, as usual)."""

from __future__ import annotations

from collections import Counter

# Declared up front, so that a scraper sees every counter from the start, at zero.
KNOWN: dict[str, str] = {
    "gateway_ingest_events_total": "Events stored",
    "gateway_ingest_duplicates_total": "Events already stored (provider retries)",
    "gateway_ingest_rejected_total": "Refused ingest requests and events, kept for replay",
    "gateway_ingest_unauthorized_total": "Ingest requests without a source's Basic credentials",
}


class Metrics:
    def __init__(self) -> None:
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._help: dict[str, str] = dict(KNOWN)

    def inc(self, name: str, amount: int = 1, help: str = "", **labels: str) -> None:
        self._counters[(name, tuple(sorted(labels.items())))] += amount
        if help:
            self._help.setdefault(name, help)

    def value(self, name: str, **labels: str) -> int:
        return self._counters[(name, tuple(sorted(labels.items())))]

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted({name for name, _ in self._counters} | set(self._help)):
            lines.append(f"# HELP {name} {self._help.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for (counter, labels), value in sorted(self._counters.items()):
                if counter != name:
                    continue
                text = ",".join(f'{key}="{val}"' for key, val in labels)
                lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
        return "\n".join(lines) + "\n"
