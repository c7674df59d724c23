"""Prometheus text exposition of the KBS's own counters (no client library needed).

Counters live in this process only: each replica is scraped on its own.
"""

from __future__ import annotations

from collections import defaultdict

_HELP = {
    "kbs_http_requests_total": "HTTP requests by endpoint and status code.",
    "kbs_attestations_total": "Attestations by outcome (token issued or refused).",
    "kbs_resource_releases_total": "Resources released as JWE.",
    "kbs_errors_total": "Refused requests by trustee error variant.",
}


class Metrics:
    def __init__(self) -> None:
        self._counts: dict[str, dict[tuple[tuple[str, str], ...], int]] = defaultdict(
            lambda: defaultdict(int)
        )

    def inc(self, name: str, **labels: str) -> None:
        key = tuple(sorted(labels.items())) if len(labels) > 1 else tuple(labels.items())
        self._counts[name][key] += 1

    def value(self, name: str, **labels: str) -> int:
        return self._counts[name].get(tuple(sorted(labels.items())), 0)

    def render(self) -> str:
        lines: list[str] = []
        for name, help_text in _HELP.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            for labels, count in sorted(self._counts.get(name, {}).items()):
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{label_text}}} {count}" if label_text else f"{name} {count}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
