# syntax=docker/dockerfile:1
# Build wheels in one stage, install them into a clean slim image in the next.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent_ledger ./agent_ledger
# With the otel extra: traces need only OTEL_EXPORTER_OTLP_ENDPOINT in the container.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[otel]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    LEDGER_HOST=0.0.0.0 \
    LEDGER_PORT=8000
RUN useradd --create-home --uid 10001 ledger
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER ledger
WORKDIR /home/ledger
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["agent-ledger", "serve", "--workers", "2"]
