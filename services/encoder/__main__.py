"""`python -m services.encoder`: run the encoder service with settings from the environment."""

from services.common.server import run
from services.encoder.server import build
from services.encoder.settings import EncoderSettings

if __name__ == "__main__":
    run(build, EncoderSettings, "encoder")
