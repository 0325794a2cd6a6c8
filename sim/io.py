"""Reading user files safely and writing outputs atomically.

Reading (``read_text``, ``read_bytes``, ``load_yaml_text``): only regular files are read (a
FIFO, a device or a directory is refused before it is opened, so a read never blocks), a file
over its size limit is refused before it is read, text must be UTF-8, and YAML goes through
``SafeLimitLoader``: ``yaml.safe_load`` semantics plus limits on nesting depth and on the size
the document has once its aliases are expanded (a "billion laughs" document is refused in
milliseconds), an alias that contains itself is refused, and a key given twice in one mapping
is an error rather than the last value silently winning.

Writing (``atomic_write``, ``atomic_path``): an output is written to a temporary file in the
same folder and renamed over the target only once it is complete, so a failed or interrupted
write (disk full, file size limit, Ctrl-C) leaves the previous file as it was. ``check_outputs``
refuses, before any work is done, an output path that is one of the run's inputs or another
of its outputs, a folder that cannot be written, or an existing target that is not a regular
file (``/dev/null`` is not replaced by a rename).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sim.errors import SimError
from sim.limits import env_var, limit

# ----------------------------------------------------------------------------- reading
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str | None:
    """What a non-regular file is ("a directory", "a FIFO (named pipe)" ...), None if regular."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_input(path: str | os.PathLike[str], limit_name: str = "input_bytes",
                error: type[SimError] = SimError) -> int:
    """Size in bytes of the regular file ``path``; ``error`` if it is missing, not a regular file
    (FIFO, device, directory) or over limit ``limit_name``."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error("file not found", where=p) from None
    except OSError as err:
        raise error(f"cannot read: {err.strerror or err}", where=p) from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise error(f"is {kind}, not a file", where=p)
    cap = limit(limit_name)
    if st.st_size > cap:
        raise error(f"file is {st.st_size:,} bytes, over the limit of {cap:,} "
                    f"(raise it with {env_var(limit_name)}=N; docs/limits.md)", where=p)
    return int(st.st_size)


def read_bytes(path: str | os.PathLike[str], limit_name: str = "input_bytes",
               error: type[SimError] = SimError) -> bytes:
    """The bytes of a regular file, checked as ``check_input`` does."""
    p = os.fspath(path)
    check_input(p, limit_name, error)
    cap = limit(limit_name)
    try:
        # open without blocking: a file swapped for a FIFO after the check must not hang
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if _kind(os.fstat(f.fileno()).st_mode) is not None:
                raise error("is not a regular file", where=p)
            data = f.read(cap + 1)
    except OSError as err:
        raise error(f"cannot read: {err.strerror or err}", where=p) from None
    if len(data) > cap:
        raise error(f"file is over the limit of {cap:,} bytes "
                    f"(raise it with {env_var(limit_name)}=N; docs/limits.md)", where=p)
    return data


def read_text(path: str | os.PathLike[str], limit_name: str = "input_bytes",
              error: type[SimError] = SimError) -> str:
    """A UTF-8 text file, checked as ``read_bytes`` does; bad UTF-8 names its byte offset."""
    data = read_bytes(path, limit_name, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise error(f"is not UTF-8 text (byte {err.start}, line {line}: {err.reason})",
                    where=os.fspath(path)) from None


# ----------------------------------------------------------------------------- YAML
class YAMLLimitError(yaml.MarkedYAMLError):
    """A YAML document over a limit, with an alias loop, or with a key given twice."""


class SafeLimitLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with limits: nesting depth, size after alias expansion, no
    self-containing aliases, no duplicate keys. Constructs exactly what ``safe_load`` does."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._max_depth = limit("yaml_depth")
        self._max_nodes = limit("yaml_nodes")

    def compose_node(self, parent: Node | None, index: Any) -> Any:
        self._depth += 1
        self._nodes += 1
        try:
            if self._nodes > self._max_nodes:  # stop early: composing costs time and memory
                raise YAMLLimitError(
                    None, None, f"the document has more than {self._max_nodes:,} nodes "
                    f"(raise it with {env_var('yaml_nodes')}=N)", self.peek_event().start_mark)
            if self._depth > self._max_depth:
                raise YAMLLimitError(
                    None, None, f"nesting deeper than {self._max_depth} levels "
                    f"(raise it with {env_var('yaml_depth')}=N)", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Node) -> Any:
        self._check_expansion(node)
        return super().construct_document(node)

    def _check_expansion(self, root: Node) -> None:
        """Size of the document with every alias expanded (memoised: linear in the nodes
        written); an alias inside the node it names is a loop."""
        size: dict[int, int] = {}
        depth: dict[int, int] = {}
        open_: set[int] = set()

        def children(n: Node) -> list[Node]:
            if isinstance(n, SequenceNode):
                return list(n.value)
            if isinstance(n, MappingNode):
                return [x for kv in n.value for x in kv]
            return []

        # iterative post-order walk, so deep documents cannot exhaust the Python stack
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            n, done = stack.pop()
            k = id(n)
            if done:
                open_.discard(k)
                kids = children(n)
                size[k] = 1 + sum(size[id(c)] for c in kids)
                depth[k] = 1 + max((depth[id(c)] for c in kids), default=0)
                if size[k] > self._max_nodes:
                    raise YAMLLimitError(
                        None, None, f"the document expands to more than {self._max_nodes:,} nodes "
                        f"through its aliases (raise it with {env_var('yaml_nodes')}=N)", n.start_mark)
                if depth[k] > self._max_depth:
                    raise YAMLLimitError(
                        None, None, f"aliases nest the document deeper than {self._max_depth} levels "
                        f"(raise it with {env_var('yaml_depth')}=N)", n.start_mark)
                continue
            if k in size:
                continue
            if k in open_:
                raise YAMLLimitError(None, None, "an alias refers to a node that contains it "
                                     "(a recursive structure)", n.start_mark)
            open_.add(k)
            stack.append((n, True))
            for c in reversed(children(n)):
                if id(c) in open_:
                    raise YAMLLimitError(None, None, "an alias refers to a node that contains it "
                                         "(a recursive structure)", c.start_mark)
                if id(c) not in size:
                    stack.append((c, False))

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        if isinstance(node, MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                try:
                    if key in seen:
                        raise YAMLLimitError(
                            "while reading a mapping", node.start_mark,
                            f"key {key!r} is given twice (first on line {seen[key].line + 1})",
                            key_node.start_mark)
                    seen[key] = key_node.start_mark
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with ``SafeLimitLoader``'s limits (raises ``yaml.YAMLError``)."""
    loader = SafeLimitLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def compose(text: str) -> Node | None:
    """``yaml.compose`` with the nesting limit (for line tables)."""
    loader = SafeLimitLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------- writing
def _same(a: str, b: str) -> bool:
    """``a`` and ``b`` name one file (after links), or would once ``a`` is written."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | os.PathLike[str], option: str) -> None:
    """Refuse, before any work, an output ``path`` that cannot be written: an existing target
    that is not a regular file, or a folder that cannot be created or written (probed by
    creating and removing a temporary file there)."""
    p = os.fspath(path)
    where = f"{option} {p}"
    if not p or p.endswith(os.sep):
        raise SimError("expected a file name", where=where)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise SimError(f"cannot write: {err.strerror or err}", where=where) from None
    if st is not None:
        kind = _kind(st.st_mode)
        if kind is not None:
            raise SimError(f"is {kind}; outputs are written as regular files", where=where)
    folder = os.path.dirname(os.path.abspath(p))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sim-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise SimError(f"cannot write to folder {folder}: {err.strerror or err}", where=where) from None


def check_outputs(outputs: Mapping[str, str | os.PathLike[str] | None],
                  inputs: Sequence[str | os.PathLike[str] | None]) -> None:
    """Check every output of a run (option -> path; None skipped) before the run: none may be
    one of ``inputs``, none may repeat another, and each must be writable (``check_output``)."""
    ins = [os.fspath(i) for i in inputs if i]
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if not path:
            continue
        p = os.fspath(path)
        for i in ins:
            if os.path.exists(i) and _same(p, i):
                via = "" if os.path.abspath(i) == os.path.abspath(p) else f" (through a link: {i})"
                raise SimError(f"{p} is also an input of this run{via}; writing it would destroy "
                               "that input", where=option)
        for other, q in seen.items():
            if _same(p, q):
                raise SimError(f"{p} is also the output of {other}", where=option)
        seen[option] = p
        check_output(p, option)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], what: str = "output") -> Iterator[str]:
    """A temporary path in ``path``'s folder to write to; renamed over ``path`` when the block
    ends without an error, removed otherwise. The previous ``path`` survives any failure."""
    p = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(p))
    base = os.path.basename(p)
    try:
        st = os.stat(p)
        if _kind(st.st_mode) is not None:
            raise SimError(f"is {_kind(st.st_mode)}; outputs are written as regular files", where=p)
        mode = stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise SimError(f"cannot write {what}: {err.strerror or err}", where=p) from None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise SimError(f"cannot write {what}: {err.strerror or err}", where=p) from None
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except OSError as err:
        raise SimError(f"cannot write {what}: {err.strerror or err}", where=p) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike[str], data: str | bytes, what: str = "output") -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
