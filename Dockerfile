# One image for the three imagesearch services; docker-compose.yml picks the service by command.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# OpenCV (pulled in by the OCR and safety models) needs these shared libraries.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY gen/python gen/python
COPY services services
COPY triton_models triton_models
# Model packages (package.json, and the photo package's weights: run `make models` before building).
COPY models models
RUN pip install . && useradd --system --uid 10001 imagesearch && mkdir -p /data /certs && chown imagesearch /data /certs
USER imagesearch
# Overridden per service in docker-compose.yml.
CMD ["python", "-m", "services.gateway"]
