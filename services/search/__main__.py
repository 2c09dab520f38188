"""`python -m services.search`: run the search service with settings from the environment."""

from services.common.server import run
from services.search.server import build
from services.search.settings import SearchSettings

if __name__ == "__main__":
    run(build, SearchSettings, "search")
