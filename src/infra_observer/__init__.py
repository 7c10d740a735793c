"""Reports where Prefect flow runs execute, as events, to the Prefect events API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("infra-observer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
