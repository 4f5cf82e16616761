"""YAML that a person edits (stack files), read strictly: bounded size and nesting, no duplicate keys.

Plain `yaml.safe_load` keeps the last of two equal keys silently, recurses once per nesting level (100k
nested `[` end in RecursionError), turns a 5,000-digit integer into a ValueError from int(), and expands
aliases of aliases exponentially in whatever walks the result. This loader refuses each of these with a
one-line PlannerError naming the file and the line.
The pure-Python SafeLoader is used (not libyaml's): person-edited files are small, and the depth check
needs the composer's Python recursion.
"""

from __future__ import annotations

import functools
from typing import Any

from planner.errors import PlannerError, shown

# A stack file nests mapping > roles list > role mapping > models list: depth 4. 32 leaves room for any
# hand-written structure while stopping long before Python's recursion limit (1000 frames, ~6 per level).
MAX_DEPTH = 32
# Integers a person types (contexts, counts, GiB) have at most 10 digits; 64 characters also covers
# underscores, signs and 0x / 0o / 0b prefixes, and stays far below int()'s 4,300-digit limit.
MAX_INT_CHARS = 64


class _Refused(Exception):
    """Internal: a limit of this loader, with the line it was hit on (1-based)."""

    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


@functools.cache
def _loader() -> Any:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._depth += 1
            try:
                event: Any = self.peek_event()  # type: ignore[no-untyped-call]
                line = event.start_mark.line + 1 if event.start_mark is not None else 0
                if self._depth > MAX_DEPTH:
                    raise _Refused(f"nested deeper than {MAX_DEPTH} levels", line)
                if isinstance(event, yaml.AliasEvent):
                    # each alias is the whole anchored value again: 10 levels of 10 aliases are 10^10
                    # items to validate from a few hundred bytes ("billion laughs")
                    raise _Refused("an alias (*name); write the value out", line)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key (a list as key): the base constructor names it
                break
            if duplicate:
                raise _Refused(f"duplicate key {shown(str(key), 40)!r}", key_node.start_mark.line + 1)
        return dict(loader.construct_mapping(node, deep=deep))

    def construct_int(loader: Any, node: Any) -> int:
        if len(str(node.value)) > MAX_INT_CHARS:
            raise _Refused(f"an integer of {len(str(node.value))} characters", node.start_mark.line + 1)
        return int(yaml.SafeLoader.construct_yaml_int(loader, node))

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    StrictLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    return StrictLoader


def load_yaml_text(text: str, origin: str) -> Any:
    """Parse `text` (from `origin`, a file name for messages) with the strict loader."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader subclass
    except _Refused as exc:
        raise PlannerError(f"{origin}: line {exc.line}: {exc.problem}; agiplan refuses it.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlannerError(f"{origin}:{where} not valid YAML ({shown(str(problem))}).") from None
    except (RecursionError, ValueError, OverflowError) as exc:  # defensive: the limits above should stop these
        raise PlannerError(f"{origin}: not valid YAML ({type(exc).__name__}).") from None
