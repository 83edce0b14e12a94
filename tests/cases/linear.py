from casekit import Case  # noqa: F401

CASES: list = []
