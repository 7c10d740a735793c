"""Speed tricks that rely on a CPython or library internal, one module each."""
