"""Adapters that connect pitstop to runners people already have.

Each module imports its runner lazily and installs nothing into the runner
when the manager is disabled:

- ``pitstop.adapters.hamilton``: Apache Hamilton (lifecycle adapter, resume via ``overrides``)
- ``pitstop.adapters.dask``: Dask local schedulers and ``dask.distributed``
- ``pitstop.adapters.pydantic_graph``: pydantic-graph ``Graph.iter()``
- ``pitstop.adapters.langgraph``: a LangGraph ``BaseCheckpointSaver`` on pitstop's stores

See docs/adapters.md.
"""
