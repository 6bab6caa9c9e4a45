"""The pagedlm cache folder and an atomic, once-only build of an entry in it.

Two processes (pytest-xdist workers, `make run` beside a test) may want the same
entry at once: a build happens in a temporary folder beside the entry and is
published by one rename, so a reader never sees a half-written entry, and an
advisory lock makes the second process wait for the first instead of building
it again.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

CACHE_ENV = "PAGEDLM_CACHE"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """`cache_dir` if given, else $PAGEDLM_CACHE, else the user cache folder
    ("pagedlm" under platformdirs' user_cache_dir)."""
    if cache_dir is not None:
        return os.fspath(cache_dir)
    env = os.environ.get(CACHE_ENV)
    if env:
        return env
    import platformdirs  # a dependency of the package (pyproject.toml)
    return platformdirs.user_cache_dir("pagedlm", appauthor=False)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive advisory lock on `path` (POSIX); elsewhere no lock, and the
    atomic rename alone keeps the entry whole."""
    try:
        import fcntl
    except ImportError:  # Windows: two builders may both build; one rename wins
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_build(root: str, key: str, build: Callable[[str], None]) -> str:
    """The folder `root/key`, built by `build(tmp_folder)` if it does not exist yet.

    `build` writes the entry's files into the empty folder it is given; the folder
    is then renamed to `root/key` in one step. If `build` raises, nothing is
    published and the temporary folder is removed. Returns the entry's path."""
    if not key or os.sep in key or key.startswith("."):
        raise ValueError(f"key must be a plain folder name, got {key!r}")
    final = os.path.join(root, key)
    if os.path.isdir(final):
        return final
    os.makedirs(root, exist_ok=True)
    with _locked(os.path.join(root, f".{key}.lock")):
        if os.path.isdir(final):  # built by another process while this one waited
            return final
        tmp = tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root)
        try:
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared (CI) cache from other users
            build(tmp)
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):
                raise
            # Another builder (no lock on this platform) published first: keep theirs.
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
