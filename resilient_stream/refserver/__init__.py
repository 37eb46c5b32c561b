"""Testing tools: an Ollama-compatible reference server with a deterministic model.

from resilient_stream.refserver import ReferenceServer, Fault, FaultSchedule

async with ReferenceServer(tokens_per_second=50) as srv:
    ...  # point any Ollama client at srv.url (HTTP/1.1 or h2c)
"""

from resilient_stream.refserver.faults import Fault, FaultPlan, FaultSchedule, RequestInfo
from resilient_stream.refserver.server import ReferenceServer
from resilient_stream.refserver.settings import ServerSettings, ServerStats

__all__ = [
    "Fault",
    "FaultPlan",
    "FaultSchedule",
    "ReferenceServer",
    "RequestInfo",
    "ServerSettings",
    "ServerStats",
]
