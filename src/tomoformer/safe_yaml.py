"""YAML read with bounded resources: ``safe_load`` semantics, plus limits on size and on alias expansion.

``yaml.safe_load`` never runs code, but its aliases share nodes: a 300-byte file of nested aliases (the "billion
laughs") parses quickly and then expands to billions of values as soon as anything walks it (a deep copy, a dump of
the resolved config). Here the composed node graph is measured first, counting every value as often as aliases
repeat it, and a document over :data:`MAX_NODES` is refused before anything is constructed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tomoformer.errors import ConfigError

# A config is a few hundred values; these limits leave room for generous hand-written files.
MAX_BYTES = 1 << 20
MAX_NODES = 100_000


def load_yaml(text: str, what: str) -> Any:
    """The value of the YAML document ``text`` (``None`` when empty); one-line :class:`ConfigError` naming ``what``
    when it is not YAML, larger than :data:`MAX_BYTES` or expands to more than :data:`MAX_NODES` values."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{what}: larger than {MAX_BYTES // 1024} KiB, not a config")
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader already refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, what)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what}: not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"{what}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """:func:`load_yaml` of a UTF-8 file; one-line :class:`ConfigError` naming ``path`` on any failure."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            # Read one byte past the limit, so a device file or a huge file is refused without reading it all.
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror or type(err).__name__})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KiB, not a config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    return load_yaml(text, str(path))


def _check_expanded_size(root: yaml.Node, what: str) -> None:
    """Refuse a node graph that expands to more than MAX_NODES values, or that contains itself (a recursive alias).

    Iterative post-order walk with memoised subtree sizes: linear in the number of distinct nodes, however many
    times aliases repeat them, and no Python recursion on deep nesting.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_NODES:
                raise ConfigError(f"{what}: YAML expands to more than {MAX_NODES:,} values (aliases), refused")
            continue
        if key in sizes:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise ConfigError(f"{what}: YAML alias refers to itself, refused")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
