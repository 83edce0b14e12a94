"""Collection rules for the whole tree (tests and the docstring examples under src/)."""

import importlib.util

# The integrations' modules import their library: without it installed, their docstring examples
# are not collected (their tests skip, saying why).
collect_ignore = [
    f"src/exactflow/integrations/{name}.py"
    for name in ("pyro", "sbi")
    if importlib.util.find_spec(name) is None
]
