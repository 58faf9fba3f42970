# The mlx-caption web page on a Linux CPU.
#
#   docker build -t mlx-caption .
#   docker run --rm -p 8501:8501 -v "$PWD/demo_out:/models:ro" mlx-caption
#
# then open http://localhost:8501. Every checkpoint folder under /models (config.json,
# model.safetensors, tokenizer.json) is offered in the model picker. Arguments after the
# image name replace the default ones, e.g. to open one checkpoint first:
#
#   docker run --rm -p 8501:8501 -v "$PWD/demo_out:/models:ro" mlx-caption \
#       --checkpoints-root /models --checkpoint /models/checkpoint
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# OpenBLAS: the mlx[cpu] wheel links the reference BLAS, about 30x slower; mlx_caption
# loads Debian's OpenBLAS before mlx.core when it is installed (see backend.py). Not pinned:
# the base image fixes the Debian release, and pinned versions vanish from its mirror.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlx_caption ./mlx_caption
# The project itself; its dependencies' ranges come from pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[cpu,app]" \
    && rm -rf /src

# Run as an unprivileged user; checkpoints are mounted read-only at /models.
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /models \
    && chown app /models
USER 10001
WORKDIR /home/app

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"]

ENTRYPOINT ["mlx-caption", "serve", "--host", "0.0.0.0", "--port", "8501"]
CMD ["--checkpoints-root", "/models"]
