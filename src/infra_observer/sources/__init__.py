"""Sources: watchers that turn infrastructure status changes into events."""
