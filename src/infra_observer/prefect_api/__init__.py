"""The Prefect REST API under `PREFECT_API_URL`, for every part of the daemon that talks to it.

- `client.py`: `PrefectApi`, one API's base URL and connections (auth header, TLS, proxy,
  timeouts), whose requests map a failure onto the error tree;
- `statuses.py`: what each answer's status means, the same for every endpoint, and
  `Retry-After`;
- `orchestration.py`: flow runs' states, read and proposed;
- `logs.py`: lines written to a flow run's logs.

The events sink (`emitter/sinks.py`) posts through the same client. Nothing here is imported
by the package itself: the stdout sink never loads the HTTP
libraries.
"""
