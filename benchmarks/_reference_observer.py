"""Runs the reference observer (prefect-kubernetes) the way a worker starts it.

Run with the reference's own interpreter, never the project's:
    ~/.cache/infra-observer/bench/ref-venv/bin/python benchmarks/_reference_observer.py
It reads KUBECONFIG and PREFECT_API_URL like the worker does, and stops on SIGTERM.
"""

import signal
import threading

from prefect_kubernetes.observer import start_observer, stop_observer


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    start_observer()
    stop.wait()
    stop_observer()


if __name__ == "__main__":
    main()
