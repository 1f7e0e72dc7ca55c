# A videosweep worker / MLflow server image (CPU). For GPUs build FROM a CUDA base and install ".[gpu,postgres]".
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY zoo zoo
COPY runner runner
COPY reports reports
RUN pip install --no-cache-dir ".[cpu,postgres]"
# MLflow 3 sends usage telemetry by default; the image stays quiet (set it to false to opt in).
ENV MLFLOW_DISABLE_TELEMETRY=true
ENTRYPOINT ["videosweep"]
