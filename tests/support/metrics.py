"""Reading what ``/metrics`` says: every sample by name and labels, and the change between two scrapes."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

METRICS_URL = "http://testserver/metrics"
Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Samples:
    values: dict[Key, float]

    @classmethod
    def parse(cls, text: str) -> Samples:
        return cls(
            {
                (sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
        )

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when the series does not exist (yet)."""
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> list[dict[str, str]]:
        """The label sets of every sample of ``name``."""
        return [dict(labels) for sample_name, labels in self.values if sample_name == name]

    def names(self) -> set[str]:
        return {name for name, _ in self.values}


async def scrape(http: httpx.AsyncClient, **headers: str) -> Samples:
    response = await http.get(METRICS_URL, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
    return Samples.parse(response.text)
