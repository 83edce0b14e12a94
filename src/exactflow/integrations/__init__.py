"""Bridges to other libraries, each imported only when its module is.

- :mod:`exactflow.integrations.pyro`: a flow's distribution view as a Pyro distribution (used
  automatically by ``flow(context)`` once Pyro has been imported).
- :mod:`exactflow.integrations.sbi`: density-estimator builders for sbi's ``NPE`` and ``NLE``.

Importing ``exactflow`` imports neither library.
"""
