"""`python -m services.gateway`: run the gateway service with settings from the environment."""

from services.common.server import run
from services.gateway.server import build
from services.gateway.settings import GatewaySettings

if __name__ == "__main__":
    run(build, GatewaySettings, "gateway")
