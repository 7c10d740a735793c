from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from infra_observer.metrics import LoopCounter, Metrics


def test_a_loop_counter_is_exposed_as_a_counter_by_labels() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("demo_events", "Events seen.", ["source", "event"], registry=registry)
    for _ in range(3):
        counter.inc(("kubernetes", "prefect.kubernetes.pod.running"))
    counter.inc(("docker", "prefect.docker.container.exited"))
    sample = registry.get_sample_value
    assert (
        sample(
            "demo_events_total", {"source": "kubernetes", "event": "prefect.kubernetes.pod.running"}
        )
        == 3
    )
    assert (
        sample(
            "demo_events_total", {"source": "docker", "event": "prefect.docker.container.exited"}
        )
        == 1
    )
    text = generate_latest(registry).decode()
    assert "# TYPE demo_events_total counter" in text
    assert 'demo_events_total{event="prefect.docker.container.exited",source="docker"} 1.0' in text


def test_a_loop_counter_name_cannot_be_registered_twice() -> None:
    registry = CollectorRegistry()
    LoopCounter("demo_events", "Events seen.", ["source"], registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LoopCounter("demo_events", "Events seen.", ["source"], registry=registry)


def test_scrapes_from_another_thread_see_consistent_counts_while_it_counts() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    keys = [("kubernetes", f"event-{number}") for number in range(50)]
    stop = threading.Event()
    seen: list[float] = []

    def scrape() -> None:
        while not stop.is_set():
            text = generate_latest(registry).decode()
            seen.append(text.count("infra_observer_events_observed_total{"))

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(200):
            for key in keys:
                metrics.events_observed.inc(key)
    finally:
        stop.set()
        scraper.join()
    assert seen, "the scraper never ran"
    assert seen == sorted(seen)  # label sets only ever appear, none is lost
    for key in keys:
        labels = {"source": key[0], "event": key[1]}
        assert registry.get_sample_value("infra_observer_events_observed_total", labels) == 200
